"""Exercise every training path on this machine's devices and print a pass/fail table.

    python benchmarks/gpu_check.py [--steps 20]

Each check trains a small BERT with `bertlab.training.train` for a few steps on synthetic batches
and reports tokens/s (measured over the second half of the steps, after warm-up and compilation).
On CUDA GPUs: fp32, bf16 autocast, fp16 autocast with the GradScaler, each attention kernel forced
with `torch.nn.attention.sdpa_kernel` (flash needs batches without a padding mask: it takes
no mask), torch.compile, and DistributedDataParallel over nccl with every local GPU (torchrun).
On a CPU-only machine it runs the CPU paths (fp32, bf16 autocast, fp16 with the GradScaler,
torch.compile), lists the GPU checks it skipped, and exits 0. It exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import bertlab
from bertlab.training import TrainConfig, train

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
           "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


@dataclass
class Setup:
    """The model and batch shape of a check: mini-sized on a GPU, tiny on a CPU."""
    config: bertlab.BertConfig
    batch_size: int
    seq_len: int


def setup_for(device: str) -> Setup:
    if device.startswith("cuda"):
        return Setup(bertlab.BertConfig.mini(vocab_size=8000, max_position_embeddings=128,
                                             hidden_dropout_prob=0.0,
                                             attention_probs_dropout_prob=0.0), 64, 128)
    return Setup(bertlab.BertConfig.tiny(vocab_size=8000, max_position_embeddings=64,
                                         hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0), 16, 64)


def synthetic_examples(n: int, seq_len: int, vocab_size: int, padded: bool) -> list[dict]:
    """Random pretraining examples: 15% of positions labelled; rows padded at the end if asked."""
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(n):
        ids = torch.randint(5, vocab_size, (seq_len,), generator=g)
        length = int(torch.randint(seq_len // 2, seq_len + 1, (1,), generator=g)) if padded \
            else seq_len
        labels = torch.where(torch.rand(seq_len, generator=g) < 0.15, ids, -100)
        labels[length:] = -100
        labels[1] = ids[1]  # at least one labelled position
        example = dict(input_ids=ids, token_type_ids=(torch.arange(seq_len) >= length // 2).long(),
                       mlm_labels=labels, nsp_labels=torch.randint(2, (), generator=g))
        if padded:
            ids[length:] = 0
            example["attention_mask"] = (torch.arange(seq_len) < length).long()
        examples.append(example)
    return examples


def tokens_per_s(device: str, precision: str, steps: int, compile: bool = False,
                 kernel: str | None = None, processes: int = 1) -> float:
    """Train for `steps` and return tokens/s over the second half (all processes together).
    A flash kernel check feeds batches without a padding mask: flash takes no mask."""
    s = setup_for(device)
    batch_size = s.batch_size * processes  # the same batch per process as with one
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(s.config)
    data = synthetic_examples(batch_size * steps, s.seq_len, s.config.vocab_size,
                              padded=kernel != "flash")
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-4, warmup=0,
                         precision=precision, device=device, compile=compile,
                         log_every=steps // 2)
    with sdpa_kernel(KERNELS[kernel]) if kernel else contextlib.nullcontext():
        history = train(model, data, config)
    return history[-1]["tokens_per_s"]


def ddp_tokens_per_s(gpus: int, steps: int) -> float:
    """Run this file's DDP worker under torchrun, one process per GPU (nccl)."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={gpus}", __file__, "--ddp-worker",
                           f"--steps={steps}"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def checks(steps: int) -> list[tuple[str, str, object]]:
    """(name, device, run) per check; run is a function returning tokens/s, or the reason the
    check is skipped."""
    cuda = torch.cuda.is_available()
    gpu = "cuda"
    bf16_gpu = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    found = [
        ("fp32", "cpu", lambda: tokens_per_s("cpu", "fp32", steps)),
        ("bf16 autocast", "cpu", lambda: tokens_per_s("cpu", "bf16", steps)),
        ("fp16 autocast + GradScaler", "cpu", lambda: tokens_per_s("cpu", "fp16", steps)),
        ("torch.compile (fp32)", "cpu", lambda: tokens_per_s("cpu", "fp32", steps, True)),
        ("fp32", gpu, lambda: tokens_per_s("cuda", "fp32", steps)),
        ("bf16 autocast", gpu,
         (lambda: tokens_per_s("cuda", "bf16", steps)) if bf16_gpu else "no native bf16"),
        ("fp16 autocast + GradScaler", gpu, lambda: tokens_per_s("cuda", "fp16", steps)),
        *[(f"attention kernel: {name}", gpu,
           lambda name=name: tokens_per_s("cuda", "auto", steps, kernel=name)) for name in KERNELS],
        ("torch.compile (auto precision)", gpu,
         lambda: tokens_per_s("cuda", "auto", steps, True)),
        (f"DDP nccl, {torch.cuda.device_count()} GPUs (auto precision)", gpu,
         lambda: ddp_tokens_per_s(torch.cuda.device_count(), steps)),
    ]
    return [(name, device, "no CUDA GPU" if device == "cuda" and not cuda else run)
            for name, device, run in found]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per check")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:  # one of torchrun's processes
        rate = tokens_per_s("cuda", "auto", args.steps, processes=int(os.environ["WORLD_SIZE"]))
        if os.environ["RANK"] == "0":
            print(json.dumps({"tokens_per_s": rate}))
        return 0

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}; devices: cpu" +
          "".join(f", cuda:{i} {torch.cuda.get_device_name(i)}"
                  for i in range(torch.cuda.device_count())))
    rows, failed = [], 0
    for name, device, run in checks(args.steps):
        if isinstance(run, str):
            rows.append((name, device, "skipped", "", run))
            continue
        print(f"checking {name} on {device} ...", file=sys.stderr, flush=True)
        try:
            rows.append((name, device, "pass", f"{run():,.0f}", ""))
        except Exception as e:  # a failed check is a row of the table, not the end of the run
            traceback.print_exc()
            failed += not name.startswith("attention kernel")  # a kernel may not exist here
            status = "unavailable" if name.startswith("attention kernel") else "FAIL"
            rows.append((name, device, status, "", str(e).strip().splitlines()[0][:80]))
    print("\n| check | device | result | tokens/s | note |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
