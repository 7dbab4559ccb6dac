"""The training loop, one for pretraining and fine-tuning alike.

`train(model, data, config)` runs AdamW with linear warmup and decay, gradient accumulation and
clipping, mixed precision, evaluation, and checkpoints that resume exactly; launched with
`torchrun --nproc_per_node=N` it runs the same loop under DistributedDataParallel. The model is
any bertlab model: its forward takes the batch dict as keyword arguments and returns an object
with `.loss`.

A run directory holds:
    metrics.jsonl              one JSON row per log step: {"step", "split": "train"|"eval", ...}
    checkpoint-{step}/         config.json + model.safetensors (Hugging Face layout) and
                               training_state.pt (optimizer, grad scaler, random states,
                               wall seconds so far)
    config.json, model.safetensors   the final model, written when the run ends

The learning rate (`lr_at`), the order of the data (`BatchOrder`) and an update's batches
(`UpdateBatches`, dynamic masks included) are functions of the step, so the step is all the state
they have; with the optimizer's, the scaler's and the global random generators' (dropout), a
resumed run continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate, get_worker_info
from tqdm.auto import tqdm

from .config import IGNORE_INDEX
from .model import check_values
from .runtime import resolve_device

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FUSED_ADAMW = ("cuda", "cpu", "mps")  # devices with torch's fused AdamW kernel
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TRAIN_KEY, EVAL_KEY = 0, 1  # what a collate's reseed key starts with, for training or evaluation

Batch = dict[str, torch.Tensor]
Collate = Callable[[list], Batch]  # examples -> batch
Metrics = Callable[[Batch, object], dict[str, torch.Tensor | float]]  # (batch, output) -> values


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer updates in the whole run
    batch_size: int = 32  # examples per update, over all accumulation steps and processes
    lr: float = 1e-4  # peak learning rate, reached at the end of warmup
    warmup: float = 0.1  # warmup length: a fraction of `steps` if < 1, else a number of steps
    weight_decay: float = 0.01  # AdamW's, on weight matrices only (not biases or LayerNorm)
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    grad_accum: int = 1  # micro-batches per update: the same update in 1/grad_accum the memory
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto: bf16 (or fp16) on a GPU, fp32 elsewhere
    device: str | torch.device | None = None  # None: bertlab.default_device()
    compile: bool | str = False  # torch.compile the model (slow to start, faster on GPUs): True,
    # or its mode: "reduce-overhead" (CUDA graphs: one launch a step; static shapes), "max-autotune"
    fullgraph: bool = False  # with compile: one graph, an error at any break (fixed shapes only)
    gradient_checkpointing: bool = False  # recompute each encoder layer in backward: less memory
    workers: int | None = None  # DataLoader processes making batches; None: up to 4 on CUDA, else 0
    tf32: bool = True  # on CUDA, fp32 matmuls in TensorFloat-32 while training (not after)
    seed: int = 0  # data order, masking, dropout (seed the model's initialization yourself)
    log_every: int = 10  # steps between train rows in the log
    eval_every: int = 0  # steps between evaluations; 0: only at the end
    checkpoint_every: int = 0  # steps between checkpoints; 0: none (the final model is saved)
    keep_checkpoints: int = 1  # how many of the latest checkpoints to keep on disk
    out_dir: str | os.PathLike | None = None  # the run directory; None writes nothing
    resume: bool = False  # continue from the latest checkpoint in out_dir

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, "
                                 f"got {getattr(self, name)!r}")
        for name in ("eval_every", "checkpoint_every", "weight_decay", "grad_clip", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ValueError(f"TrainConfig.warmup is a fraction of the steps (< 1) or a whole "
                             f"number of steps, got {self.warmup}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"TrainConfig.workers must be None or an integer >= 0, "
                             f"got {self.workers!r}")
        if self.compile not in (False, True, *COMPILE_MODES):
            raise ValueError(f"TrainConfig.compile must be True, False or one of {COMPILE_MODES}, "
                             f"got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.out_dir is None and (self.checkpoint_every or self.resume):
            raise ValueError("checkpoints and resuming need a run directory: set out_dir")

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)


@dataclass(kw_only=True)
class RunSettings:
    """What a recipe's run shares with every other: how it uses the machine, its seed, its
    checkpoints. PretrainSettings and FinetuneSettings add their own on top."""

    grad_accum: int = 1
    precision: str = "auto"
    device: str | None = None
    compile: bool | str = False
    gradient_checkpointing: bool = False
    workers: int | None = None
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False

    def train_config(self, process: Process, out_dir: Path, **recipe) -> TrainConfig:
        """The training loop's config: these settings, on this process's device, and the
        recipe's own (steps, batch_size, lr, ...)."""
        shared = ("grad_accum", "precision", "compile", "gradient_checkpointing", "workers",
                  "seed", "checkpoint_every", "resume")
        return TrainConfig(**{name: getattr(self, name) for name in shared}, **recipe,
                           device=process.device, out_dir=out_dir)


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of update `step` (counted from 0): a linear rise to `lr` over
    `warmup_steps`, then a linear fall that would reach 0 at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    return lr * (total_steps - step) / (total_steps - warmup_steps)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes bf16 on GPUs with native bf16, fp16 on older GPUs, and fp32 elsewhere."""
    native_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "auto":
        return "fp32" if device.type != "cuda" else "bf16" if native_bf16 else "fp16"
    if precision == "bf16" and device.type == "cuda" and not native_bf16:
        raise ValueError("this GPU has no native bf16: use precision fp16 (or auto)")
    return precision


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as BERT used it. Weight decay applies to matrices (linear weights, embeddings) only:
    biases and LayerNorm weights, the parameters with fewer than 2 dimensions, are not decayed.
    Fused (one kernel for all parameters, no read of its step count) where torch has it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = all(p.device.type in FUSED_ADAMW and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused or None)


# Random state: seeded, saved, restored.

def set_seed(seed: int) -> None:
    """Seed every generator a run draws from: Python's, NumPy's and torch's (CPU and GPUs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state, as tensors, tuples and numbers (what weights_only loading reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


# Data: which examples each update sees.

class BatchOrder:
    """The example indices of every update's batch: `order[step]`, (batch_size,). Each epoch
    is a fresh shuffle seeded by (seed, epoch), so any step's batch is a function of the step
    alone; the incomplete last batch of an epoch is dropped."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.per_epoch = num_examples // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the training data has {num_examples} examples, fewer than one "
                             f"batch of {batch_size}: lower the batch size")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.epoch, self.shuffled = -1, np.zeros(0, np.int64)

    def __getitem__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self.epoch:  # one shuffle per epoch, kept while the epoch lasts
            rng = np.random.default_rng([self.seed, epoch])
            self.epoch, self.shuffled = epoch, rng.permutation(self.num_examples)
        return self.shuffled[i * self.batch_size:(i + 1) * self.batch_size]


class UpdateBatches(torch.utils.data.Dataset):
    """Item `step`: this process's micro-batches of update `step`, collated: its share of
    `BatchOrder`'s batch, split into `grad_accum` parts. A collate with `reseed(key)` (the
    pretraining collator's dynamic masks) is reseeded with (step, rank, micro-batch) first, and
    a DataLoader worker seeds Python's, NumPy's and torch's generators from (seed, step, rank),
    so an update's batches depend on nothing but the step: DataLoader workers make them in
    any order, and a resumed run gets the same ones."""

    def __init__(self, data: Sequence, collate: Collate, order: BatchOrder, grad_accum: int,
                 process: Process):
        self.data, self.collate, self.order = data, collate, order
        self.grad_accum, self.rank, self.world = grad_accum, process.rank, process.world

    def __getitem__(self, step: int) -> list[Batch]:
        parts = self.order[step].reshape(self.world, self.grad_accum, -1)[self.rank]
        if get_worker_info() is not None:
            seed = np.random.SeedSequence([self.order.seed, step, self.rank]).generate_state(1)
            random.seed(int(seed[0]))
            np.random.seed(int(seed[0]))
            torch.manual_seed(int(seed[0]))
        batches = []
        for micro, indices in enumerate(parts):
            if hasattr(self.collate, "reseed"):
                self.collate.reseed((TRAIN_KEY, step, self.rank, micro))
            batches.append(self.collate([self.data[i] for i in indices]))
        return batches


def count_tokens(batch: Batch) -> int:
    """Real (non-padding) tokens in a batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


class Means:
    """Weighted running means of named values, averaged over all processes when read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}

    def add(self, values: dict, weight: float = 1.0) -> None:
        for name, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach()
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def read(self, world: int = 1) -> dict[str, float]:
        names = sorted(self.sums)
        sums = torch.stack([self.sums[k] for k in names])  # (K,)
        weights = torch.tensor([self.weights[k] for k in names], device=self.device)  # (K,)
        totals = torch.cat([sums, weights])  # (2K,)
        if world > 1:
            dist.all_reduce(totals)
        return dict(zip(names, (totals[:len(names)] / totals[len(names):]).tolist()))


# Processes: one, or N under torchrun.

class Process(NamedTuple):
    """This process: its rank among `world` processes (0 of 1 without torchrun), its device."""

    rank: int
    world: int
    device: torch.device


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[Process]:
    """This process. Under torchrun (WORLD_SIZE > 1) join the process group (nccl on GPUs, one
    GPU per process; gloo on CPUs) and leave it at the end; otherwise this is process 0 of 1.
    A collective that waits longer than BERTLAB_DIST_TIMEOUT seconds (600) fails, not hangs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Process(0, 1, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()  # else the caller set up the group and will end it
    if joined:
        timeout = timedelta(seconds=float(os.environ.get("BERTLAB_DIST_TIMEOUT", 600)))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield Process(dist.get_rank(), world, device)
    finally:
        if joined:
            dist.destroy_process_group()


# Checkpoints on disk.

def checkpoints(out_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    found = [p for p in out_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resumed_seconds(out_dir: Path) -> float:
    """The wall seconds a run had taken when it wrote its latest checkpoint: what `--resume`
    carries on from. Memory-mapped: the optimizer's tensors are not read."""
    state = torch.load(checkpoints(out_dir)[-1] / "training_state.pt", map_location="cpu",
                       weights_only=True, mmap=True)
    return state["seconds"]


def metric_rows(path_or_rows) -> list[dict]:
    """The rows of a run's metrics.jsonl (or of the run directory holding it), or a list of rows
    as they are; each needs a `step` and a `split` ('train' or 'eval')."""
    if isinstance(path_or_rows, (str, os.PathLike)):
        path = Path(path_or_rows)
        path = path / "metrics.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"no metrics at {path}: expected a run directory or its "
                             "metrics.jsonl")
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    else:
        rows = list(path_or_rows)
    for i, row in enumerate(rows):
        if "step" not in row or row.get("split") not in ("train", "eval"):
            raise ValueError(f"metrics row {i} ({row}) needs a 'step' and a 'split' of "
                             "'train' or 'eval'")
    if not rows:
        raise ValueError("no metrics rows")
    return rows


def read_metrics(path_or_rows) -> dict[str, dict[str, list]]:
    """A run's metrics (see metric_rows) as columns per split, ready to plot:
    `m = read_metrics(run); plt.plot(m["train"]["step"], m["train"]["loss"])`.
    A column is None in rows that lack it."""
    rows = metric_rows(path_or_rows)
    columns: dict[str, dict[str, list]] = {}
    for split in dict.fromkeys(row["split"] for row in rows):
        split_rows = [row for row in rows if row["split"] == split]
        names = dict.fromkeys(k for row in split_rows for k in row if k != "split")
        columns[split] = {k: [row.get(k) for row in split_rows] for k in names}
    return columns


RESUMABLE_CHANGES = ("resume", "device", "precision", "compile", "fullgraph",  # same run still
                     "grad_accum", "gradient_checkpointing", "workers")


def prepare_run_dir(out: Path, command: str, settings: dict, resume: bool,
                    process: Process) -> None:
    """A new run needs an empty directory; a resumed one the settings it was started with.
    Every process checks, so that a bad setting stops them all at once, with the same message;
    process 0 then saves the settings as COMMAND_args.json (pretrain_args.json, ...)."""
    saved_file = out / f"{command}_args.json"
    if resume:
        if not saved_file.is_file():
            raise ValueError(f"nothing to resume: {out} holds no `bertlab {command}` run")
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        changed = [f"--{k.replace('_', '-')} {settings[k]} (the run has {saved[k]})"
                   for k in sorted(settings.keys() & saved.keys())  # newer settings: as now
                   if k not in RESUMABLE_CHANGES and saved[k] != settings[k]]
        if changed:
            raise ValueError("--resume continues a run with the settings it started with; "
                             f"these differ: {'; '.join(changed)}")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose a new --out, or add --resume to continue "
                         "the run in it")
    if process.world > 1:
        dist.barrier()  # nothing is written before every process has looked
    if process.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        saved_file.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def train(model: torch.nn.Module, train_data: Sequence, config: TrainConfig, *,
          collate: Collate = default_collate, eval_data: Sequence | None = None,
          eval_collate: Collate | None = None, metrics: Metrics | None = None,
          process: Process | None = None) -> list[dict]:
    """Train `model` in place for `config.steps` updates; return the rows it logged.

    train_data, eval_data: sequences of examples. `collate` turns a list of examples into the
    batch dict the model takes (`eval_collate`, if given, does it for eval_data); a collate with
    `reseed(key)` (its own random generator) is reseeded for every batch (see UpdateBatches).
    metrics(batch, output) -> {name: value} adds values (accuracies) to the log, averaged like
    the loss. Under torchrun every process calls this with the same arguments; each takes its
    slice of every batch, and process 0 alone writes to out_dir. `process`: the caller's, when
    it has joined the process group itself (`with distributed(device) as process`).
    """
    if process is None:
        with distributed(resolve_device(config.device)) as process:
            return train(model, train_data, config, collate=collate, eval_data=eval_data,
                         eval_collate=eval_collate, metrics=metrics, process=process)
    trainer = Trainer(model, config, *process, collate, metrics)
    with matmul_precision("high" if config.tf32 and process.device.type == "cuda" else None):
        return trainer.fit(train_data, eval_data, eval_collate or collate)


@contextlib.contextmanager
def matmul_precision(precision: str | None) -> Iterator[None]:
    """torch's fp32 matmul precision ("high": TF32 on GPUs that have it) for a block, then put
    back, so that what runs after training (a parity check in fp32) is exact again."""
    before = torch.get_float32_matmul_precision()
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class Trainer:
    """One training run's state: the model and how it runs, optimizer, gradient scaler, step."""

    def __init__(self, model, config: TrainConfig, rank: int, world: int, device: torch.device,
                 collate: Collate, metrics: Metrics | None):
        if config.batch_size % (world * config.grad_accum):
            raise ValueError(f"batch_size {config.batch_size} must divide evenly into "
                             f"{world} processes x {config.grad_accum} accumulation steps")
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.collate, self.metrics = collate, metrics
        self.precision = resolve_precision(config.precision, device)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.model = model.to(device)
        if config.gradient_checkpointing:
            model.bert.encoder.checkpointing = True  # every bertlab model has its encoder there
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        wrapped = model
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        if config.compile:
            mode = None if config.compile is True else config.compile
            wrapped = torch.compile(wrapped, fullgraph=config.fullgraph, mode=mode)
        self.forward = wrapped
        self.cuda_graphs = config.compile in ("reduce-overhead", "max-autotune")
        self.step = 0
        self.unchecked: list[torch.Tensor] = []  # losses of the steps since the last check
        self.seconds_before = 0.0  # spent on this run by earlier invocations (see resume)
        self.started = time.perf_counter()
        self.history: list[dict] = []
        set_seed(config.seed + rank)

    def sum_over_processes(self, count: int) -> float:
        if self.world == 1:
            return count
        total = torch.tensor(float(count), device=self.device)
        dist.all_reduce(total)
        return total.item()

    def autocast(self):
        dtype = AUTOCAST_DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def to_device(self, batch: Batch) -> Batch:
        """Check the batch's inputs on the host, where it costs no wait for the device, then
        move it there. A batch with no padding goes without its attention mask, so that the
        fused attention kernels run (the model cannot look without waiting)."""
        if hasattr(self.model, "config") and "input_ids" in batch:
            check_values(self.model.config, batch["input_ids"], batch.get("token_type_ids"),
                         batch.get("attention_mask"))
        if "attention_mask" in batch and batch["attention_mask"].bool().all():
            batch = {k: v for k, v in batch.items() if k != "attention_mask"}
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def fit(self, train_data: Sequence, eval_data: Sequence | None,
            eval_collate: Collate) -> list[dict]:
        c = self.config
        self.start_run(len(train_data))
        if eval_data is not None and len(eval_data) < self.world:
            raise ValueError(f"eval_data has {len(eval_data)} examples, fewer than the "
                             f"{self.world} processes")
        batches = self.loader(train_data)
        interval, tokens, seconds = Means(self.device), 0, 0.0
        self.model.train()
        with tqdm(total=c.steps, initial=self.step, disable=self.rank != 0, unit="step") as bar:
            while self.step < c.steps:
                started = time.perf_counter()
                tokens += self.update(next(batches), interval)
                seconds += time.perf_counter() - started
                self.step += 1
                bar.update()
                at_end = self.step == c.steps
                if at_end or self.step % c.log_every == 0:
                    values = interval.read(self.world)  # the interval's one read of the device
                    if not math.isfinite(values["loss"]):
                        self.check_finite()  # raises, naming the step
                    self.unchecked = []
                    tokens = self.sum_over_processes(tokens)
                    row = self.log("train", **values, lr=self.optimizer.param_groups[0]["lr"],
                                   tokens_per_s=tokens / seconds)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tokens / seconds:,.0f}")
                    interval, tokens, seconds = Means(self.device), 0, 0.0
                if eval_data is not None and (at_end or c.eval_every
                                              and self.step % c.eval_every == 0):
                    self.log("eval", **self.evaluate(eval_data, eval_collate))
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.check_finite()
                    self.save_checkpoint(len(train_data))
        if self.out_dir is not None and self.rank == 0:
            self.model.save_pretrained(self.out_dir)
        return self.history

    def loader(self, data: Sequence) -> Iterator[list[Batch]]:
        """The micro-batches of every update from this one on (`UpdateBatches`), made ahead of
        the step by `workers` DataLoader processes (none: here, when asked for) into pinned
        memory on CUDA, so that copying them to the GPU does not wait for the host."""
        c = self.config
        workers = c.workers if c.workers is not None else (
            min(4, (os.cpu_count() or 2) // 2) if self.device.type == "cuda" else 0)
        updates = UpdateBatches(data, self.collate, BatchOrder(len(data), c.batch_size, c.seed),
                                c.grad_accum, Process(self.rank, self.world, self.device))
        return iter(DataLoader(updates, batch_size=None, sampler=range(self.step, c.steps),
                               num_workers=workers, prefetch_factor=4 if workers else None,
                               pin_memory=self.device.type == "cuda",
                               generator=torch.Generator().manual_seed(c.seed)))  # not torch's

    def update(self, micro_batches: list[Batch], interval: Means) -> int:
        """One optimizer step: forward and backward over the micro-batches (gradients add up;
        DDP averages them over processes at the last one), clip, step. Returns tokens seen.
        The gradient is the whole batch's, however it is split (see `loss_weights`). Nothing
        here waits for the device: the loss and metrics stay on it until read."""
        c = self.config
        lr = lr_at(self.step, c.lr, c.warmup_steps, c.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, tokens = torch.zeros((), device=self.device), 0
        for i, (batch, weights) in enumerate(zip(micro_batches, self.loss_weights(micro_batches))):
            tokens += count_tokens(batch)  # on the host
            batch = self.to_device(batch)
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last or self.world == 1 else self.forward.no_sync():
                if self.cuda_graphs:  # a new replay: the last one's outputs were copied out
                    torch.compiler.cudagraph_mark_step_begin()
                with self.autocast():
                    output = self.forward(**batch)
                share = sum(getattr(output, term) * weight for term, weight in weights.items()
                            if getattr(output, term) is not None)  # of the whole batch's loss
                self.scaler.scale(share * self.world).backward()  # DDP divides by the world
            loss += share.detach().float()
            if self.metrics is not None:
                interval.add(self.metrics(batch, output))
        self.scaler.unscale_(self.optimizer)
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)  # skipped by the fp16 scaler if a gradient overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        interval.add({"loss": loss * self.world})  # this process's share, read as a mean
        self.unchecked.append(loss)
        return tokens

    def loss_weights(self, micro_batches: list[Batch]) -> list[dict[str, float | torch.Tensor]]:
        """For each micro-batch, the weight of each of the output's losses, so that the weighted
        sum over micro-batches and processes is the loss of the whole batch at once. A loss that
        is a mean over labels (the model's `loss_labels`: MLM over its masked tokens, NSP over
        its pairs) weighs n / N: this micro-batch's labels over the whole batch's, counted on the
        host (and summed over processes on the device, without waiting). Micro-batches of a
        model without `loss_labels` weigh equally."""
        terms = getattr(self.model, "loss_labels", None) or {"loss": None}
        counts = torch.tensor([[len(micro_batches) ** -1 if key is None else
                                int((batch[key] != IGNORE_INDEX).sum()) if key in batch else 0
                                for key in terms.values()] for batch in micro_batches],
                              dtype=torch.float64)  # (k, terms)
        if self.world == 1:
            weights = (counts / counts.sum(0).clamp(min=1)).tolist()  # floats: nothing to move
        else:
            counts = counts.float().to(self.device, non_blocking=True)
            totals = counts.sum(0)  # (terms,)
            dist.all_reduce(totals)  # queued on the device like the rest of the step
            weights = counts / totals.clamp(min=1)  # (k, terms)
        return [dict(zip(terms, row)) for row in weights]

    def check_finite(self) -> None:
        """Stop if a step since the last check had a non-finite loss (on any process): one read
        of the device, made before a checkpoint and whenever a logged mean is not finite."""
        if not self.unchecked:
            return
        losses = torch.stack(self.unchecked)  # (S,): this process's, one per step
        if self.world > 1:
            dist.all_reduce(losses)  # a NaN anywhere is a NaN everywhere
        first = self.step - len(self.unchecked) + 1
        self.unchecked = []
        for step, loss in enumerate(losses.tolist(), first):
            if not math.isfinite(loss):
                self.diverged(loss / self.world, step)

    def diverged(self, loss: float, step: int):
        kept = checkpoints(self.out_dir) if self.out_dir is not None else []
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was saved"
        raise FloatingPointError(
            f"the loss became {loss} at step {step}: training diverged; {where}. "
            f"Try a lower learning rate (lr is {self.config.lr}) or a longer warmup.")

    @torch.no_grad()
    def evaluate(self, data: Sequence, collate: Collate) -> dict[str, float]:
        """Mean loss and metrics over `data`, in order, each process taking every world-th
        example. The random state is seeded, then put back: evaluating never changes the
        training run."""
        size = self.config.batch_size // self.world
        mine = range(self.rank, len(data), self.world)
        means = Means(self.device)
        self.model.eval()
        with self.seeded():
            for start in range(0, len(mine), size):
                examples = [data[i] for i in mine[start:start + size]]
                if hasattr(collate, "reseed"):
                    collate.reseed((EVAL_KEY, start, self.rank))
                batch = self.to_device(collate(examples))
                with self.autocast():
                    output = self.model(**batch)
                values = {"loss": output.loss, **(self.metrics(batch, output) if self.metrics
                                                  else {})}
                means.add(values, weight=len(examples))
        self.model.train()
        return means.read(self.world)

    @contextlib.contextmanager
    def seeded(self) -> Iterator[None]:
        """Run a block with the global generators seeded, then put the random state back."""
        saved = rng_state()
        set_seed(self.config.seed)
        try:
            yield
        finally:
            set_rng_state(saved)

    def log(self, split: str, **values) -> dict:
        row = {"step": self.step, "split": split, **values}
        self.history.append(row)
        if self.out_dir is not None and self.rank == 0:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return row

    def start_run(self, num_examples: int) -> None:
        """Make the run directory, or resume: load the latest checkpoint and drop the log rows
        written after it (by a run that died before its next checkpoint)."""
        if self.out_dir is None:
            return
        log = self.out_dir / "metrics.jsonl"
        if not self.config.resume:
            if log.exists() or checkpoints(self.out_dir):
                raise ValueError(f"{self.out_dir} already holds a run: resume it or choose "
                                 "another directory")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            return
        self.load_checkpoint(num_examples)
        if self.rank == 0 and log.exists():
            rows = log.read_text(encoding="utf-8").splitlines()
            kept = [r for r in rows if r and json.loads(r)["step"] <= self.step]
            log.write_text("".join(r + "\n" for r in kept), encoding="utf-8")

    def elapsed(self) -> float:
        """Wall seconds this run has trained so far (evaluations and checkpoints included), over
        every invocation: a resumed run counts its earlier ones up to the checkpoint it resumed
        from (time spent after the last checkpoint of a crashed invocation is lost work)."""
        return self.seconds_before + time.perf_counter() - self.started

    def save_checkpoint(self, num_examples: int) -> None:
        """Write checkpoint-{step}: the model (Hugging Face layout) and training_state.pt. It is
        written to a temporary directory, then renamed into place, so a crash while writing
        leaves the previous checkpoint whole; older ones beyond keep_checkpoints are removed."""
        states = [rng_state()]
        if self.world > 1:  # every process's, in rank order
            states = [None] * self.world
            dist.all_gather_object(states, rng_state())
        if self.rank != 0:
            return
        tmp = self.out_dir / f".tmp-checkpoint-{self.step}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        torch.save({"step": self.step, "seconds": self.elapsed(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(), "rng": states,
                    "data": {"seed": self.config.seed, "batch_size": self.config.batch_size,
                             "num_examples": num_examples}},
                   tmp / "training_state.pt")
        tmp.rename(self.out_dir / f"checkpoint-{self.step}")
        for old in checkpoints(self.out_dir)[:-self.config.keep_checkpoints]:
            shutil.rmtree(old)

    def load_checkpoint(self, num_examples: int) -> None:
        found = checkpoints(self.out_dir) if self.out_dir.is_dir() else []
        if not found:
            raise ValueError(f"nothing to resume: {self.out_dir} has no checkpoint-* directory")
        path = found[-1]
        state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
        data = {"seed": self.config.seed, "batch_size": self.config.batch_size,
                "num_examples": num_examples}
        if state["data"] != data:
            raise ValueError(f"{path} was trained with {state['data']}, this run has {data}: "
                             "resume with the same data, seed and batch size")
        self.model.load_state_dict(load_file(path / "model.safetensors", device=str(self.device)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if len(state["rng"]) == self.world:
            set_rng_state(state["rng"][self.rank])
        else:  # the data order is a function of the step and the global batch: it carries on
            warnings.warn(f"{path} was written by {len(state['rng'])} processes and this run has "
                          f"{self.world}: the batches go on as before, but the random draws "
                          "(dynamic masks, dropout) are seeded afresh, so the run is not the "
                          "one an unchanged world size would have made", stacklevel=2)
            set_seed(self.config.seed + self.world * state["step"] + self.rank)
        self.step, self.seconds_before = state["step"], state["seconds"]
        if self.rank == 0:
            for unfinished in self.out_dir.glob(".tmp-checkpoint-*"):
                shutil.rmtree(unfinished)
