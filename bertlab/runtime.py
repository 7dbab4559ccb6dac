"""Where and how big: the device to run on, and the course's quick/full scale switch."""

from __future__ import annotations

import os
import random

import torch

SCALES = ("quick", "full")


def default_device() -> torch.device:
    """The best device present: cuda, then Apple's mps, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device `name` says ("cpu", "cuda:1", "mps"), checked to be present; None: the best."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA GPU that torch can use")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: there are {torch.cuda.device_count()} GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: Apple's MPS is not available here")
    return device


def course_scale(default: str | None = None) -> str:
    """`quick` (a 2-core laptop, what CI checks) or `full` (a GPU): the BERTLAB_SCALE variable,
    else the notebook's own setting, else `full` on a GPU and `quick` elsewhere."""
    scale = os.environ.get("BERTLAB_SCALE") or default
    if scale is None:
        scale = "full" if default_device().type == "cuda" else "quick"
    if scale not in SCALES:
        raise ValueError(f"BERTLAB_SCALE must be one of {SCALES}, got {scale!r}")
    return scale


def notebook_setup(scale: str | None = None, seed: int = 0) -> tuple[str, torch.device]:
    """The first cell of every chapter: pick the scale and the device, seed torch and Python's
    random, and say which ones this run used."""
    scale = course_scale(scale)
    device = default_device()
    torch.manual_seed(seed)
    random.seed(seed)
    print(f"scale: {scale} | device: {device.type}")
    return scale, device
