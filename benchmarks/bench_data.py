"""How fast the pretraining data is made, in how much memory, next to how fast the model eats it.

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py [--copies 1 4 16] [--no-write]

With a WordPiece tokenizer trained on the bundled corpus (vocabulary 8000), it measures
  - scaling: for the corpus and for folders of 4 and 16 copies of it (written to a temporary
    folder, deleted at the end), in a fresh process each: tokenizing into a token store on disk,
    then building the NSP pairs (128 tokens, dupe factor 5, dynamic masking), the peak RSS that
    adds, and batches of 32 made the way bertlab.training makes them (indices from
    `BatchOrder`, `collate([data[i] for i in idx])`);
  - the whole `bertlab pretrain` on the largest folder (WordPiece training included, 20 steps of
    the tiny model): the seconds until it starts training, and its peak RSS;
  - per-batch rates on the corpus: static masks, dynamic masks, dynamic whole-word masks;
  - the model it feeds: a `mini` BertForPreTraining training step (forward, backward, AdamW) on
    those batches, the median of 7 steps after two warm-up steps.
Reports rates and how many times faster than the model each data step is (>= 10 wanted), and
writes the tables with this command to benchmarks/RESULTS.md (its own section only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import bertlab
from bertlab.data import load_corpus
from bertlab.data.pretraining import pretraining_examples
from bertlab.data.store import TokenStore
from bertlab.tokenization import load_tokenizer, save_tokenizer, train_wordpiece
from bertlab.training import BatchOrder

RESULTS = Path(__file__).with_name("RESULTS.md")
H100_FLOPS = 989e12  # an H100 SXM's dense bf16 FLOP/s (the spec sheet, no sparsity)
MFU = 0.4  # the share of it a well-tuned BERT pretraining run gets
HEADING = "## Data pipeline (bench_data.py)"
THREADS = 1
MAX_SEQ_LEN, DUPE_FACTOR, BATCH = 128, 5, 32


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB."""
    line = next(x for x in open("/proc/self/status") if x.startswith(field))
    return int(line.split()[1]) / 1024


def batches_per_second(dataset, batches=300) -> float:
    """Batches made as bertlab.training makes them: BatchOrder's indices, then collate."""
    order = BatchOrder(len(dataset), BATCH, seed=0)
    start = time.perf_counter()
    for step in range(batches):
        dataset.collate([dataset[i] for i in order[step]])
    return batches / (time.perf_counter() - start)


def measure(folder: str, tokenizer_dir: str, store_dir: str) -> dict:
    """One scaling row, in this (fresh) process."""
    tokenizer = load_tokenizer(tokenizer_dir)
    texts = [d.text for d in load_corpus(folder)]
    before = status_mb("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM restarts from here
    store, store_s = timed(lambda: TokenStore.build(texts, tokenizer, store_dir))
    data, pairs_s = timed(lambda: pretraining_examples(
        store, tokenizer, MAX_SEQ_LEN, dupe_factor=DUPE_FACTOR, dynamic_masking=True))
    peak, after = status_mb("VmHWM") - before, status_mb("VmRSS") - before
    return {"mb": sum(len(t.encode()) for t in texts) / 1e6, "tokens": len(store.tokens),
            "pairs": len(data), "store_s": store_s, "pairs_s": pairs_s, "peak_mb": peak,
            "bytes_per_token": after * 2**20 / len(store.tokens),
            "batches_s": batches_per_second(data),
            "tokens_per_batch": BATCH * (data.pairs["a_len"].mean() + data.pairs["b_len"].mean()
                                         + 3)}


def copies_of_the_corpus(copies: int, folder: Path) -> Path:
    folder.mkdir()
    for c in range(copies):
        for i, d in enumerate(load_corpus()):
            (folder / f"{c:02d}_{i:02d}.txt").write_text(d.text, encoding="utf-8")
    return folder


def scaling_row(copies: int, folder: Path, tokenizer_dir: Path, store_dir: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", str(folder),
                           str(tokenizer_dir), str(store_dir)],
                          capture_output=True, text=True, check=True)
    shutil.rmtree(store_dir)
    return {"copies": copies, **json.loads(done.stdout.splitlines()[-1])}


def pretrain_run(folder: Path, out: Path) -> tuple[float, float, float]:
    """`bertlab pretrain` on `folder`, 20 steps: (seconds until training starts, seconds in all,
    peak RSS in MB). The peak is the largest child's so far: run it after the smaller ones."""
    command = [Path(sys.executable).parent / "bertlab", "pretrain", "--corpus", folder,
               "--max-seq-len", str(MAX_SEQ_LEN), "--dupe-factor", str(DUPE_FACTOR),
               "--batch-size", str(BATCH), "--steps", "20", "--eval-every", "0",
               "--checkpoint-every", "0", "--out", out]
    start, training = time.perf_counter(), None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as run:
        for line in run.stdout:
            if line.startswith("pretraining a"):  # printed as the training loop starts
                training = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(f"bertlab pretrain failed ({run.returncode})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return training, time.perf_counter() - start, peak


def train_steps_per_second(vocab_size, dataset, steps) -> float:
    """forward + backward + AdamW on the mini preset: 1 / the median step time after two
    warm-up steps (the median, so that a burst of other work on the machine counts less)."""
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(bertlab.BertConfig.mini(vocab_size=vocab_size)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    order = BatchOrder(len(dataset), BATCH, seed=0)
    for step in range(2 + steps):
        batch = dataset.collate([dataset[i] for i in order[step]])
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return 1 / statistics.median(times[2:])


def train_flops_per_token(config: bertlab.BertConfig, masked: float = 0.15) -> float:
    """Training FLOPs per token (backward = 2x forward): the encoder's matmuls, attention's
    scores and weighted sums over MAX_SEQ_LEN, the MLM decoder at the masked positions only."""
    H, L = config.hidden_size, config.num_hidden_layers
    weights = L * (4 * H * H + 2 * H * config.intermediate_size)  # per token, per layer
    forward = 2 * weights + 4 * L * MAX_SEQ_LEN * H + 2 * masked * H * config.vocab_size
    return 3 * forward


def h100_paragraph(tokens_per_s_per_core: float) -> str:
    """Would this pipeline keep an H100 busy? The tokens/s a model needs, against one core's."""
    configs = {"mini": bertlab.BertConfig.mini(vocab_size=8000), "base": bertlab.BertConfig.base()}
    needs = {name: MFU * H100_FLOPS / train_flops_per_token(c) for name, c in configs.items()}
    cores = {name: need / tokens_per_s_per_core for name, need in needs.items()}
    return (f"**Does it keep an H100 fed?** At {MFU:.0%} MFU of an H100's {H100_FLOPS / 1e12:.0f} "
            f"dense bf16 TFLOP/s, training at {MAX_SEQ_LEN} tokens consumes about "
            f"{needs['mini'] / 1e6:.1f}M tokens/s for mini (vocabulary 8000) and "
            f"{needs['base'] / 1e3:,.0f}k tokens/s for base (FLOPs per token from the model's "
            f"shape: {train_flops_per_token(configs['mini']) / 1e6:.0f}M and "
            f"{train_flops_per_token(configs['base']) / 1e6:.0f}M). One core makes "
            f"batches with dynamic masks at {tokens_per_s_per_core / 1e6:.1f}M tokens/s (the "
            f"largest corpus above), so base needs {cores['base']:.2f} of a core: fed with room "
            f"to spare. Mini would need {cores['mini']:.1f} cores: on CUDA `bertlab.training` "
            "makes batches in DataLoader workers (up to 4 by default, `--workers N` for more), "
            f"so mini at 40% MFU needs ~{cores['mini']:.0f} cores to spare or the data sets the "
            "pace; at the 10-20% MFU a model that small reaches, a quarter to a half of that. "
            "Memory is no limit at any size: the store is memory-mapped, and what grows with "
            "the corpus is the pairs (21 bytes each, memory-mapped too) and the segment offsets "
            "(8 bytes a line).")


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
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=7, help="timed training steps")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # one row, in a child
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    load_before = os.getloadavg()[0]
    texts = [d.text for d in load_corpus()]
    tokenizer = train_wordpiece(texts, vocab_size=8000)
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        save_tokenizer(tokenizer, work / "tokenizer")
        tokenizer = load_tokenizer(work / "tokenizer")
        rows = []
        for copies in args.copies:
            folder = copies_of_the_corpus(copies, work / f"x{copies}")
            rows.append(scaling_row(copies, folder, work / "tokenizer", work / "store"))
            if copies == max(args.copies):
                started_s, pretrain_s, pretrain_mb = pretrain_run(folder, work / "run")
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work)

    one_pass = dict(max_seq_len=MAX_SEQ_LEN, dupe_factor=1)
    static = pretraining_examples(texts, tokenizer, **one_pass)
    dynamic = pretraining_examples(texts, tokenizer, dynamic_masking=True, **one_pass)
    whole_word = pretraining_examples(texts, tokenizer, dynamic_masking=True,
                                      whole_word_mask=True, **one_pass)
    model_rate = train_steps_per_second(tokenizer.get_vocab_size(), dynamic, args.steps)
    rates = [("batches: static masks", batches_per_second(static)),
             ("batches: dynamic masks", batches_per_second(dynamic)),
             ("batches: dynamic whole-word masks", batches_per_second(whole_word)),
             ("model: mini training step, fp32, dropout 0.1", model_rate)]
    load = max(load_before, os.getloadavg()[0])

    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    header = (f"{platform.processor() or platform.machine()} ({'with' if bf16 else 'no'} "
              f"avx512_bf16), {THREADS} thread, "
              f"torch {torch.__version__}, load average {load:.1f}; WordPiece vocabulary "
              f"{tokenizer.get_vocab_size()}, max_seq_len {MAX_SEQ_LEN}, dupe_factor "
              f"{DUPE_FACTOR}, batches of {BATCH}")
    lines = ["| corpus | MB of text | tokens | pairs | store build s | pairs build s | "
             "peak RSS added MB | memory per token (bytes) | batches/s | x the model's rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| x{r['copies']} | {r['mb']:.1f} | {r['tokens']:,} | {r['pairs']:,} | "
              f"{r['store_s']:.1f} | {r['pairs_s']:.1f} | {r['peak_mb']:,.0f} | "
              f"{r['bytes_per_token']:.1f} | {r['batches_s']:,.0f} | "
              f"{r['batches_s'] / model_rate:,.0f} |" for r in rows]
    lines += ["", "| step (the corpus, one pass) | batches/s | x the model's rate |",
              "|---|---|---|"]
    lines += [f"| {name} | {rate:,.1f} | {rate / model_rate:,.1f} |" for name, rate in rates]
    table = "\n".join(lines)
    largest = max(rows, key=lambda r: r["copies"])
    paragraph = h100_paragraph(largest["batches_s"] * largest["tokens_per_batch"])
    whole = (f"The whole `bertlab pretrain --corpus FOLDER --max-seq-len {MAX_SEQ_LEN} "
             f"--dupe-factor {DUPE_FACTOR} --batch-size {BATCH} --steps 20` on the x"
             f"{largest['copies']} folder ({largest['mb']:.0f} MB, WordPiece training included, "
             f"tiny model): training starts after {started_s:.0f} s, the run takes "
             f"{pretrain_s:.0f} s and peaks at {pretrain_mb:,.0f} MB of RSS (the in-memory "
             "builder before the token store: 97 s to start on a quiet machine, 5.5 GB).")
    print(header, table, whole, paragraph, sep="\n")
    if not args.no_write:
        command = "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/bench_data.py",
                                                          *sys.argv[1:]])
        write_section(f"{HEADING}\n\n`{command}` — {time.strftime('%Y-%m-%d')}, {header}\n\n"
                      f"{table}\n\n{whole}\n\n{paragraph}\n")


if __name__ == "__main__":
    main()
