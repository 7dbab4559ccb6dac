"""How fast the pretraining data is made, next to how fast the model eats it.

    python benchmarks/bench_data.py [--dupe-factor 10] [--steps 7] [--no-write]

On the bundled corpus, with a WordPiece tokenizer trained on it, it times
  - building the examples once: tokenize every line, make the NSP pairs (`dupe_factor` passes),
    mask them statically (`pretraining_examples`);
  - making batches of 32 in a DataLoader: static masks, dynamic masks, dynamic whole-word masks;
  - the model it feeds: a `mini` BertForPreTraining training step (forward, backward, AdamW) on
    those batches, the median of 7 steps after two warm-up steps.
Reports examples/s and how many times faster than the model each data step is (>= 10 wanted),
and writes the table with this command to benchmarks/RESULTS.md (its own section only).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import bertlab
from bertlab.data import load_corpus
from bertlab.data.pretraining import pretraining_examples
from bertlab.tokenization import train_wordpiece

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Data pipeline (bench_data.py)"
THREADS = 2


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def batches_per_second(dataset, batch_size, max_batches=500) -> float:
    loader = DataLoader(dataset, batch_size, shuffle=True, collate_fn=dataset.collate,
                        generator=torch.Generator().manual_seed(0))
    start, n = time.perf_counter(), 0
    for n, _ in enumerate(loader, 1):
        if n == max_batches:
            break
    return n / (time.perf_counter() - start)


def train_steps_per_second(vocab_size, dataset, batch_size, steps) -> float:
    """forward + backward + AdamW on the mini preset: 1 / the median step time after two
    warm-up steps (the median, so that a burst of other work on the machine counts less)."""
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(bertlab.BertConfig.mini(vocab_size=vocab_size)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(dataset, batch_size, shuffle=True, collate_fn=dataset.collate,
                        generator=torch.Generator().manual_seed(0))
    times = []
    for batch, _ in zip(loader, range(2 + steps)):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return 1 / statistics.median(times[2:])


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md (or add it), leaving the others alone."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.strip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section.strip("\n")
    RESULTS.write_text(text + "\n", encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dupe-factor", type=int, default=10)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=7, help="timed training steps")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]

    texts = [d.text for d in load_corpus()]
    tokenizer = train_wordpiece(texts, vocab_size=args.vocab_size)
    build = dict(max_seq_len=args.max_seq_len, dupe_factor=args.dupe_factor)
    static, build_s = timed(lambda: pretraining_examples(texts, tokenizer, **build))
    one_pass = dict(max_seq_len=args.max_seq_len, dupe_factor=1, dynamic_masking=True)
    dynamic = pretraining_examples(texts, tokenizer, **one_pass)
    whole_word = pretraining_examples(texts, tokenizer, whole_word_mask=True, **one_pass)

    B = args.batch_size
    model_rate = B * train_steps_per_second(tokenizer.get_vocab_size(), dynamic, B, args.steps)
    rows = [("build: tokenize, pair, mask statically (once)", len(static) / build_s),
            ("batches: static masks", B * batches_per_second(static, B)),
            ("batches: dynamic masks", B * batches_per_second(dynamic, B)),
            ("batches: dynamic whole-word masks", B * batches_per_second(whole_word, B)),
            (f"model: mini training step, batch {B} x {args.max_seq_len}, fp32, dropout 0.1",
             model_rate)]
    load = max(load_before, os.getloadavg()[0])

    header = (f"{platform.processor() or platform.machine()}, {THREADS} threads, "
              f"torch {torch.__version__}, load average {load:.1f}; corpus "
              f"{len(texts)} documents, WordPiece vocabulary {tokenizer.get_vocab_size()}, "
              f"max_seq_len {args.max_seq_len}, dupe_factor {args.dupe_factor} -> "
              f"{len(static)} examples built in {build_s:.1f} s")
    lines = ["| step | examples/s | x the model's rate |", "|---|---|---|"]
    lines += [f"| {name} | {rate:,.0f} | {rate / model_rate:,.1f} |" for name, rate in rows]
    table = "\n".join(lines)
    print(header, table, sep="\n")
    if not args.no_write:
        command = "python " + " ".join(["benchmarks/bench_data.py", *sys.argv[1:]])
        write_section(f"{HEADING}\n\n`{command}` — {time.strftime('%Y-%m-%d')}, {header}\n\n"
                      f"{table}\n")


if __name__ == "__main__":
    main()
