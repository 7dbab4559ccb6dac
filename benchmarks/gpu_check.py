"""What decides how fast bertlab trains on this machine, measured in one run of under 10 minutes.

    python benchmarks/gpu_check.py [--steps 12] [--sections mfu syncs ...] [--json FILE]

Every row trains through the real loop (`bertlab.training.train`) on real batches: Shakespeare's
spoken lines in BERT's uncased vocabulary, cut into sentence pairs and masked afresh for every
batch by the pretraining collator, padding and all.

  matmul    the dense matmul rate this device reaches (bf16; fp32 too on a CPU): MFU's yardstick
  mfu       mini and base at 128 and 512 tokens, eager and torch.compile'd (mini with CUDA
            graphs too: compile mode reduce-overhead): tokens/s, wall and device seconds per
            step, model FLOPs utilization against the matmul rate
  syncs     operations per step that make the host wait for the device
            (torch.cuda.set_sync_debug_mode), and torch.compile's graphs, graph breaks,
            recompiles and compile seconds over batches of varying masked counts
  kernel    which attention kernel ran on those padded batches (the profiler's kernel names)
  memory    peak device memory of base and large at 512 tokens over a micro-batch ladder, with
            and without gradient checkpointing
  adamw     one optimizer step of base: fused against foreach
  tf32      an fp32 step of mini with TF32 matmuls on and off
  ddp       every local GPU under torchrun (nccl); skipped with fewer than two

On a CPU it runs the rows a CPU has at sizes a CPU finishes (tiny and mini, 64 tokens), says
which it skipped and why, and exits 0; it exits 1 if a row fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import torch

import bertlab
from bertlab import training
from bertlab.data import load_corpus
from bertlab.data.pretraining import pretraining_examples
from bertlab.metrics import pretraining_metrics
from bertlab.pretrain import pretraining_text
from bertlab.tokenization import load_bert_tokenizer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
SECTIONS = ("matmul", "mfu", "syncs", "kernel", "memory", "adamw", "tf32", "ddp")


# ----------------------------------------------------------------------------- data and model

def bert_vocab():
    """BERT's uncased WordPiece vocabulary (30,522 tokens), from the bundled MiniLM."""
    return load_bert_tokenizer(bertlab.minilm_path() / "vocab.txt")


def batches_of(tokenizer, seq_len: int, count: int):
    """Real pretraining examples, masked afresh per batch, with fixed MLM positions as `bertlab
    pretrain` makes them: enough for `count` examples."""
    texts = [pretraining_text(d) for d in load_corpus()[:count // 200 + 2]]
    return pretraining_examples(texts, tokenizer, seq_len, seed=0, dupe_factor=1,
                                dynamic_masking=True, fixed_positions=True)


def model_for(preset: str, seq_len: int, vocab_size: int) -> bertlab.BertForPreTraining:
    torch.manual_seed(0)
    return bertlab.BertForPreTraining(bertlab.BertConfig.preset(
        preset, vocab_size=vocab_size, max_position_embeddings=max(seq_len, 512),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def flops_per_step(config: bertlab.BertConfig, batch: int, seq_len: int) -> float:
    """Training FLOPs (forward + backward, 3x the forward) of one step: the encoder's matmuls
    and attention at every token, the MLM head at the ~15% of tokens it decodes."""
    C, L, F, V = (config.hidden_size, config.num_hidden_layers, config.intermediate_size,
                  config.vocab_size)
    per_token = 2 * L * (4 * C * C + 2 * C * F) + 2 * L * 2 * seq_len * C
    head = 2 * (C * C + C * V)
    return 3 * batch * seq_len * (per_token + 0.15 * head)


class StepTimer:
    """Wall and device seconds of each Trainer.update (device time from CUDA events)."""

    def __init__(self):
        self.wall: list[float] = []
        self.events: list[tuple] = []

    @contextlib.contextmanager
    def installed(self):
        update = training.Trainer.update

        def timed(trainer, *args):
            start = time.perf_counter()
            events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if CUDA else []
            if events:
                events[0].record()
            tokens = update(trainer, *args)
            if events:
                events[1].record()
                torch.cuda.synchronize()  # the timer's own wait, outside the measured update
                self.events.append(events)
            self.wall.append(time.perf_counter() - start)
            return tokens

        training.Trainer.update = timed
        try:
            yield self
        finally:
            training.Trainer.update = update

    def median(self, skip: int) -> tuple[float, float | None]:
        wall = statistics.median(self.wall[skip:])
        device = (statistics.median(a.elapsed_time(b) / 1e3 for a, b in self.events[skip:])
                  if self.events else None)
        return wall, device


def run(preset: str, seq_len: int, batch: int, steps: int, tokenizer, precision: str = "auto",
        compile: bool | str = False, **config) -> dict:
    """Train `steps` updates; the medians of the steps after the first third (warm-up,
    compilation), tokens/s and MFU. Compiled, every batch is padded to `seq_len`, as `bertlab
    pretrain --compile` pads it (one shape: what CUDA graphs need)."""
    model = model_for(preset, seq_len, tokenizer.get_vocab_size())
    data = batches_of(tokenizer, seq_len, batch * steps)
    if compile:
        data.collate.width = seq_len
    settings = training.TrainConfig(steps=steps, batch_size=batch, lr=1e-4, warmup=0,
                                    precision=precision, device=DEVICE, compile=compile,
                                    fullgraph=compile, log_every=steps, **config)
    with StepTimer().installed() as timer:
        started = time.perf_counter()
        history = training.train(model, data, settings, collate=data.collate,
                                 metrics=pretraining_metrics)
        total = time.perf_counter() - started
    wall, device = timer.median(skip=steps // 3)
    flops = flops_per_step(model.config, batch, seq_len)
    return {"preset": preset, "seq_len": seq_len, "batch": batch, "compile": compile,
            "wall_s": wall, "device_s": device, "first_step_s": timer.wall[0],
            "tokens_per_s": history[-1]["tokens_per_s"], "model_tflops": flops / wall / 1e12,
            "total_s": total}


# ----------------------------------------------------------------------------- the sections

def matmul_rate(dtype: torch.dtype, n: int = 4096 if CUDA else 1024, repeats: int = 20) -> float:
    """Dense n x n matmul FLOP/s in `dtype` on DEVICE."""
    a, b = (torch.randn(n, n, device=DEVICE, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def section_matmul(args, tokenizer, found) -> list[dict]:
    rows = [{"dtype": "bf16", "tflops": matmul_rate(torch.bfloat16) / 1e12}]
    if not CUDA:
        rows.append({"dtype": "fp32", "tflops": matmul_rate(torch.float32) / 1e12})
    found["peak"] = max(r["tflops"] for r in rows)
    return rows


def shapes(args) -> list[tuple[str, int, int]]:
    """(preset, tokens, batch) of the MFU rows: BERT's sizes on a GPU, small ones on a CPU."""
    if CUDA:
        return [("mini", 128, 256), ("mini", 512, 64), ("base", 128, 64), ("base", 512, 16)]
    return [("tiny", 64, 32), ("mini", 64, 16)]


def section_mfu(args, tokenizer, found) -> list[dict]:
    rows = []
    for preset, seq_len, batch in shapes(args):
        graphs = ("reduce-overhead",) if CUDA and preset == "mini" else ()  # launch-bound sizes
        for compile in (False, True, *graphs):
            row = run(preset, seq_len, batch, args.steps, tokenizer, compile=compile)
            row["mfu"] = row["model_tflops"] / found.get("peak", float("nan"))
            rows.append(row)
    return rows


def section_syncs(args, tokenizer, found) -> list[dict]:
    """Host waits per step (CUDA only), and the compiled graphs over varying masked counts."""
    preset, seq_len, batch = shapes(args)[0]
    rows = []
    if CUDA:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(preset, seq_len, batch, args.steps, tokenizer)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        waits = [w for w in caught if "synchroniz" in str(w.message)]
        rows.append({"what": "host waits per step (eager)", "value": len(waits) / args.steps,
                     "where": sorted({f"{w.filename.split('/')[-1]}:{w.lineno}" for w in waits})})
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    row = run(preset, seq_len, batch, args.steps, tokenizer, compile=True)
    rows.append({"what": "compiled: graphs", "value": counters["stats"]["unique_graphs"]})
    rows.append({"what": "compiled: graph breaks", "value": sum(counters["graph_break"].values()),
                 "where": sorted(counters["graph_break"])[:5]})
    rows.append({"what": "compiled: recompiles", "value": sum(counters["recompiles"].values())})
    rows.append({"what": "compiled: first step s (compiling)", "value": row["first_step_s"]})
    return rows


def section_kernel(args, tokenizer, found) -> list[dict]:
    """The attention kernels a forward pass ran: on a real batch with padding (a quarter of its
    rows the shortest pairs), and on one without (full-length rows only, whose attention mask
    the training loop leaves out)."""
    preset, seq_len, batch = shapes(args)[0]
    model = model_for(preset, seq_len, tokenizer.get_vocab_size()).to(DEVICE)
    data = batches_of(tokenizer, seq_len, 4 * batch)
    by_length = np.argsort(data.pairs["a_len"] + data.pairs["b_len"], kind="stable")  # (N,)
    rows = []
    for name, indices in (("padded", [*by_length[:batch // 4], *by_length[batch // 4 - batch:]]),
                          ("no padding", by_length[-batch:])):
        inputs = data.collate([data[int(i)] for i in indices])
        padded = float((inputs["attention_mask"] == 0).float().mean())
        if padded == 0:
            del inputs["attention_mask"]  # as the loop sends it: the fused kernels may run
        inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if CUDA else [])
        autocast = torch.autocast(DEVICE.type, torch.bfloat16, enabled=CUDA)
        with torch.profiler.profile(activities=activities) as prof, autocast, torch.no_grad():
            model(**inputs)
        names = {e.key for e in prof.key_averages()}
        attention = sorted(n for n in names if "attention" in n.lower() or "fmha" in n.lower()
                           or "flash" in n.lower())
        rows.append({"batch": name, "padded share": padded, "kernels": attention[:8]})
    return rows


def section_memory(args, tokenizer, found) -> list[dict]:
    if not CUDA:
        return [{"skipped": "peak device memory needs a CUDA GPU"}]
    rows = []
    for preset in ("base", "large"):
        for checkpointing in (False, True):
            for micro in (8, 16, 32, 64, 128):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                try:
                    run(preset, 512, micro, 2, tokenizer, gradient_checkpointing=checkpointing)
                    peak = torch.cuda.max_memory_allocated() / 2 ** 30
                except torch.OutOfMemoryError:
                    rows.append({"preset": preset, "checkpointing": checkpointing,
                                 "micro_batch": micro, "peak_gib": "OOM"})
                    break
                rows.append({"preset": preset, "checkpointing": checkpointing,
                             "micro_batch": micro, "peak_gib": round(peak, 1)})
    return rows


def section_adamw(args, tokenizer, found) -> list[dict]:
    model = model_for("base" if CUDA else "mini", 128, tokenizer.get_vocab_size()).to(DEVICE)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    rows = []
    for kind in ("fused", "foreach"):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **{kind: True})
        for _ in range(3):
            optimizer.step()
        sync()
        start = time.perf_counter()
        for _ in range(10):
            optimizer.step()
        sync()
        rows.append({"adamw": kind, "ms_per_step": (time.perf_counter() - start) * 100})
    return rows


def section_tf32(args, tokenizer, found) -> list[dict]:
    if not CUDA:
        return [{"skipped": "TF32 is a CUDA matmul mode"}]
    preset, seq_len, batch = shapes(args)[0]
    return [{"tf32": on, **run(preset, seq_len, batch, args.steps, tokenizer, precision="fp32",
                               tf32=on)} for on in (True, False)]


def section_ddp(args, tokenizer, found) -> list[dict]:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return [{"skipped": f"DDP needs 2 or more GPUs; this machine has {gpus}"}]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={gpus}", __file__, "--ddp-worker",
                           f"--steps={args.steps}"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return [json.loads(done.stdout.strip().splitlines()[-1])]


def ddp_worker(args) -> None:
    """One of torchrun's processes: mini at 128 tokens, the batch of one GPU on each."""
    preset, seq_len, batch = shapes(args)[0]
    world = int(os.environ["WORLD_SIZE"])
    row = run(preset, seq_len, batch * world, args.steps, bert_vocab())
    if os.environ["RANK"] == "0":
        print(json.dumps({"gpus": world, **row}))


# ----------------------------------------------------------------------------- the report

def describe() -> str:
    devices = "".join(f", cuda:{i} {torch.cuda.get_device_name(i)}"
                      for i in range(torch.cuda.device_count()))
    return f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}; cpu{devices}"


def table(name: str, rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = [f"\n{name}", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--steps", type=int, default=12, help="training steps per row")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    print(describe())
    tokenizer, found, report, failed = bert_vocab(), {}, {}, 0
    sections: dict[str, Callable] = {name: globals()[f"section_{name}"] for name in SECTIONS}
    for name in args.sections:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            report[name] = sections[name](args, tokenizer, found)
        except Exception as e:  # a failed section is a row of the report, not the end of it
            traceback.print_exc()
            failed += 1
            report[name] = [{"FAILED": str(e).strip().splitlines()[0][:120]}]
        print(table(f"{name} ({time.perf_counter() - started:.0f} s)", report[name]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": describe(), **report}, f, indent=2, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
