"""The training loop pretraining the `mini` preset: bertlab's BertForPreTraining against
transformers' BertForPreTraining (sdpa attention) driven by the same loop, on the same data.

    python benchmarks/bench_train.py [--rounds 4] [--steps 5] [--batch-size 32] [--seq-len 128]
                                     [--precision fp32] [--no-write]

Data: sentence pairs from the bundled Shakespeare (spoken lines, a WordPiece vocabulary of 8000
trained on them), masked afresh for every batch, as `bertlab pretrain` does. Both models start
from the same weights. After a warm-up block each, blocks of --steps updates alternate ours /
theirs for --rounds rounds, so drifting machine load hits both; tokens/s is the median block.

Memory: each model also trains in a subprocess of its own (Linux), which reports its resident set
after setup (imports, data, model: VmRSS), resets the peak (/proc/self/clear_refs) and reports the
peak while training (VmHWM); the difference is what training needs on top of the model and data.
(tracemalloc does not see torch's allocations; getrusage's maxrss cannot be reset, and the
tokenizer training of the setup would dominate it.)

Appends the table under "## Training loop (bench_train.py)" in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

import bertlab
from bertlab.data.corpus import load_corpus
from bertlab.data.pretraining import pretraining_examples
from bertlab.pretrain import pretraining_text
from bertlab.tokenization import train_wordpiece
from bertlab.training import TrainConfig, train

transformers.logging.set_verbosity_error()
RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Training loop (bench_train.py)"
MODELS = ("bertlab", "transformers")


class TransformersPretraining(torch.nn.Module):
    """transformers' BertForPreTraining, taking bertlab's batch: mlm_labels -> labels,
    nsp_labels -> next_sentence_label."""

    def __init__(self, config: bertlab.BertConfig):
        super().__init__()
        hf_config = transformers.BertConfig(**config.to_dict(), attn_implementation="sdpa")
        self.model = transformers.BertForPreTraining(hf_config)

    def forward(self, input_ids, token_type_ids, attention_mask, mlm_labels, nsp_labels):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                          attention_mask=attention_mask, labels=mlm_labels,
                          next_sentence_label=nsp_labels)


def make_data(seq_len: int):
    """Dynamically masked pretraining examples from the first 12 plays, and the vocab size."""
    texts = [pretraining_text(d) for d in load_corpus()[:12]]
    tokenizer = train_wordpiece(texts, vocab_size=8000)
    examples = pretraining_examples(texts, tokenizer, max_seq_len=seq_len, dupe_factor=1,
                                    dynamic_masking=True)
    return examples, tokenizer.get_vocab_size()


def make_model(name: str, vocab_size: int, seq_len: int) -> torch.nn.Module:
    """The mini preset, dropout off (as `bertlab pretrain`); both models get the same weights."""
    config = bertlab.BertConfig.mini(vocab_size=vocab_size, max_position_embeddings=seq_len,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours = bertlab.BertForPreTraining(config)
    if name == "bertlab":
        return ours
    theirs = TransformersPretraining(config)
    missing, unexpected = theirs.model.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("decoder" in k for k in missing), (missing, unexpected)
    return theirs


def block(model, data, args) -> float:
    """Train `args.steps` updates; tokens/s of the block."""
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-4, warmup=0,
                         precision=args.precision, device="cpu", log_every=args.steps)
    return train(model, data, config, collate=data.collate)[-1]["tokens_per_s"]


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM the peak)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def memory(name: str, args) -> dict:
    """In this process (a fresh one): RSS after setup, and its peak over two blocks of training."""
    data, vocab_size = make_data(args.seq_len)
    model = make_model(name, vocab_size, args.seq_len)
    setup = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    for _ in range(2):
        block(model, data, args)
    return {"setup": setup, "peak": status_mb("VmHWM")}


def measure_memory(name: str, args) -> dict:
    command = [sys.executable, __file__, f"--memory-of={name}", f"--steps={args.steps}",
               f"--batch-size={args.batch_size}", f"--seq-len={args.seq_len}",
               f"--precision={args.precision}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="blocks per model, after warm-up")
    parser.add_argument("--steps", type=int, default=5, help="updates per block")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--memory-of", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(memory(args.memory_of, args)))
        return

    load_before = os.getloadavg()[0]
    data, vocab_size = make_data(args.seq_len)
    models = {name: make_model(name, vocab_size, args.seq_len) for name in MODELS}
    speeds = {name: [] for name in MODELS}
    for name in MODELS:
        block(models[name], data, args)  # warm-up
    for _ in range(args.rounds):
        for name in MODELS:  # interleaved
            speeds[name].append(block(models[name], data, args))
    load_after = os.getloadavg()[0]
    rss = {name: measure_memory(name, args) for name in MODELS}

    median = {name: statistics.median(v) for name, v in speeds.items()}
    lines = ["| model | tokens/s (median) | blocks (tokens/s) | RSS before training MB | "
             "peak RSS training MB | added by training MB |", "|---|---|---|---|---|---|"]
    for name in MODELS:
        lines.append(f"| {name} | {median[name]:,.0f} | "
                     f"{', '.join(f'{v:,.0f}' for v in speeds[name])} | "
                     f"{rss[name]['setup']:,.0f} | {rss[name]['peak']:,.0f} | "
                     f"{rss[name]['peak'] - rss[name]['setup']:,.0f} |")
    table = "\n".join(lines)
    ratio = median["bertlab"] / median["transformers"]
    header = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, transformers {transformers.__version__}; mini preset "
              f"(L4/H256), vocab {vocab_size}, batch {args.batch_size} x {args.seq_len}, "
              f"{args.precision}, dropout 0, {args.rounds} blocks of {args.steps} updates each; "
              f"load average {load_before:.1f} before, {load_after:.1f} after")
    summary = (f"bertlab / transformers tokens/s: **{ratio:.2f}x**. transformers decodes the "
               "vocabulary at every position, bertlab only at the ~15% masked ones (as BERT). "
               "Memory: one subprocess per model, VmRSS after setup and VmHWM (reset after "
               "setup) over two blocks, from /proc/self/status.")
    print(header, table, summary, sep="\n\n")
    if not args.no_write:
        threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " \
            if "OMP_NUM_THREADS" in os.environ else ""
        command = f"{threads}python " + " ".join(["benchmarks/bench_train.py", *sys.argv[1:]])
        write_section(f"{HEADING}\n\n`{command}` — {time.strftime('%Y-%m-%d')}, {header}\n\n"
                      f"{table}\n\n{summary}\n")


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, or append it; other sections stay."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(HEADING)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end:] if end != -1 else "")
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
