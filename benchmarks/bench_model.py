"""bertlab against transformers, same config, same weights, interleaved in one run.

    python benchmarks/bench_model.py [--presets mini base] [--repeats 5] [--no-write]

For each preset (vocabulary 30522, batch 16 x 128) it times
  - inference: BertModel forward, ours against transformers' `sdpa` path;
  - a pretraining step (forward + backward + AdamW) with 15% of positions labelled: ours (which
    decodes the vocabulary only at labelled positions, as the original BERT) against transformers'
    BertForPreTraining (which decodes every position).
Runs alternate ours/theirs so drifting machine load hits both. Reports median times, the time
ratio ours/theirs (< 1 = ours faster) and model-FLOPs utilization against the measured fp32 matmul
rate, and appends the table with this command to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import bertlab

transformers.logging.set_verbosity_error()
RESULTS = Path(__file__).with_name("RESULTS.md")
B, T, MASKED = 16, 128, 0.15


def matmul_rate(n=2048, repeats=10) -> float:
    """Measured fp32 matmul FLOP/s on this device and thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def model_flops(cfg: bertlab.BertConfig, train: bool) -> float:
    """FLOPs BERT needs for one batch: matmuls only, MLM decode at the labelled positions."""
    H, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    per_token = L * (2 * 4 * H * H + 2 * 2 * H * cfg.intermediate_size + 2 * 2 * T * H)
    forward = B * T * per_token + 2 * B * H * H  # + pooler
    if train:
        forward += B * T * MASKED * 2 * (H * H + H * V) + 2 * B * H * 2  # MLM at 15%, NSP
    return forward * (3 if train else 1)  # backward costs twice the forward


def batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, cfg.vocab_size, (B, T), generator=g)
    types = (torch.arange(T) >= T // 2).long().expand(B, T).contiguous()
    mask = torch.ones(B, T, dtype=torch.long)
    labels = torch.where(torch.rand(B, T, generator=g) < MASKED, ids, -100)
    nsp = torch.randint(0, 2, (B,), generator=g)
    return ids, types, mask, labels, nsp


def hf_config(cfg: bertlab.BertConfig) -> transformers.BertConfig:
    return transformers.BertConfig(**cfg.to_dict(), attn_implementation="sdpa")


def make_pair(preset: str, train: bool):
    """Our model and transformers', holding the same weights."""
    cfg = bertlab.BertConfig.preset(preset)
    torch.manual_seed(0)
    if train:
        ours = bertlab.BertForPreTraining(cfg)
        theirs = transformers.BertForPreTraining(hf_config(cfg))
    else:
        ours = bertlab.BertModel(cfg)
        theirs = transformers.BertModel(hf_config(cfg))
    assert theirs.config._attn_implementation == "sdpa"
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("decoder" in k for k in missing), (missing, unexpected)
    return cfg, ours, theirs


def inference_step(model, ours, data):
    ids, types, mask, _, _ = data
    with torch.no_grad():
        if ours:
            model(ids, types, mask)
        else:
            model(input_ids=ids, token_type_ids=types, attention_mask=mask)


def train_step(model, ours, data, optimizer):
    ids, types, mask, labels, nsp = data
    if ours:
        loss = model(ids, types, mask, mlm_labels=labels, nsp_labels=nsp).loss
    else:
        loss = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                     next_sentence_label=nsp).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench(preset: str, train: bool, repeats: int) -> dict:
    cfg, ours, theirs = make_pair(preset, train)
    data = batch(cfg)
    runs = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        model.train(train)
        if train:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            runs[name] = lambda m=model, n=name, o=opt: train_step(m, n == "ours", data, o)
        else:
            runs[name] = lambda m=model, n=name: inference_step(m, n == "ours", data)
        runs[name]()  # warm-up
    times = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for name in ("ours", "theirs"):  # interleaved
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"preset": preset, "what": "pretraining step" if train else "inference forward",
            "ours": med["ours"], "theirs": med["theirs"], "flops": model_flops(cfg, train)}


def table(rows, rate) -> str:
    lines = ["| preset | what | bertlab s | transformers s | ratio (ours/theirs) "
             "| MFU bertlab | MFU transformers |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['what']} | {r['ours']:.3f} | {r['theirs']:.3f} | "
                     f"**{r['ours'] / r['theirs']:.2f}** | {r['flops'] / r['ours'] / rate:.0%} | "
                     f"{r['flops'] / r['theirs'] / rate:.0%} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["mini", "base"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rate = matmul_rate()
    rows = [bench(p, train, args.repeats) for p in args.presets for train in (False, True)]
    load = os.getloadavg()[0]
    header = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, transformers {transformers.__version__}, "
              f"batch {B} x {T}, fp32, median of {args.repeats}, load average {load:.1f}; "
              f"measured matmul rate {rate / 1e9:.0f} GFLOP/s")
    text = table(rows, rate)
    print(header, text, sep="\n")
    if not args.no_write:
        command = "python " + " ".join(["benchmarks/bench_model.py", *sys.argv[1:]])
        section = (f"\n## Model: bertlab vs transformers (bench_model.py)\n\n"
                   f"`{command}` — {time.strftime('%Y-%m-%d')}, {header}\n\n{text}\n\n"
                   "MFU counts the FLOPs BERT needs (matmuls; MLM decoder at the 15% labelled "
                   "positions) for both models, so work transformers does beyond that (decoding "
                   "every position) shows as lower MFU.\n")
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(section)


if __name__ == "__main__":
    main()
