"""Pretrained vs from scratch as the labelled data shrink: the experiment chapters 8 and 9 promise.

    python benchmarks/finetune_experiment.py                     # everything: many CPU hours
    python benchmarks/finetune_experiment.py --tasks genre --starts scratch minilm \\
        --sizes 100 300 --seeds 0                                 # a subset
    python benchmarks/finetune_experiment.py --report             # table and plot from the cache

For each task, `bertlab finetune` from three starts -- `scratch` (random weights, the course
checkpoint's shape and tokenizer), `ours` (the course's pretrained checkpoint) and `minilm`
(all-MiniLM-L6-v2 with its own tokenizer) -- on training sets of several sizes, drawn at random
by seed, with at least --min-steps updates however small the set. The learning rate of every
(task, start) is chosen on dev from a small grid at one size (--lr-size, seed 0) and recorded.
For genre, a bag-of-words baseline (scikit-learn's MultinomialNB on word counts) is trained on
the same subsets. Scores are on the test works: mean +- standard deviation over the seeds.

Every run is cached as one JSON line in benchmarks/finetune_runs.jsonl, keyed by its settings:
a killed experiment continues where it stopped, and a subset adds to what is there. At the end
the table (of everything cached for the settings asked) and a learning-curve plot
(benchmarks/finetune_experiment.png) are written, with this command, to benchmarks/RESULTS.md,
and the table's runs as flat rows to benchmarks/finetune_experiment.json (chapter 8 reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.naive_bayes import MultinomialNB

from bertlab.checkpoint import COURSE_MODEL
from bertlab.data.tasks import load_task, subsample
from bertlab.finetune import TASKS, FinetuneSettings
from bertlab.finetune import finetune as run_finetune

matplotlib.use("Agg")

HEADING = "## Fine-tuning: pretrained vs scratch (finetune_experiment.py)"
CACHE = "finetune_runs.jsonl"
PLOT = "finetune_experiment.png"
SUMMARY = "finetune_experiment.json"  # the table's runs as flat rows, for chapter 8
STARTS = ("scratch", "ours", "minilm")
LR_GRIDS = {"scratch": (2e-4, 5e-4, 1e-3), "ours": (2e-4, 5e-4, 1e-3),
            "minilm": (5e-5, 1e-4, 2e-4)}
USES = {"scratch": ("config.json", "tokenizer.json"),  # the checkpoint's files a start reads
        "ours": ("config.json", "tokenizer.json", "model.safetensors"), "minilm": ()}
CHANCE = {"genre": 1 / 3, "next_line": 1 / 4}
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    p.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "3000", "all"],
                   help="training-set sizes: numbers, or 'all'")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--checkpoint", default=str(COURSE_MODEL),
                   help="the pretrained checkpoint of start 'ours', and the shape and tokenizer "
                        "of 'scratch' (default: the course's)")
    p.add_argument("--lr-size", type=int, default=1000,
                   help="the training-set size at which each start's learning rate is chosen")
    p.add_argument("--lr", nargs="+", default=[], metavar="START=LR",
                   help="use this learning rate for START instead of choosing one "
                        "(e.g. minilm=1e-4)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--min-steps", type=int, default=300)
    p.add_argument("--max-steps", type=int, default=1500, help="caps the largest sets' runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16 only pays on CPUs with AVX-512 BF16 (see lscpu); emulated, it is "
                        "~20x slower (%(default)s)")
    p.add_argument("--report", action="store_true", help="run nothing: report from the cache")
    p.add_argument("--dir", type=Path, default=Path(__file__).parent,
                   help=f"where the cache ({CACHE}), the plot ({PLOT}) and RESULTS.md are "
                        "(default: benchmarks/; another folder for trials)")
    args = p.parse_args(argv)
    if any(s != "all" and not s.isdigit() for s in args.sizes):
        p.error(f"--sizes takes numbers or 'all', got {args.sizes}")
    try:
        args.lr = {start: float(lr) for start, lr in (pair.split("=") for pair in args.lr)}
    except ValueError:
        p.error(f"--lr takes START=LR pairs, like minilm=1e-4; got {args.lr}")
    if set(args.lr) - set(STARTS):
        p.error(f"--lr: the starts are {', '.join(STARTS)}; got {', '.join(args.lr)}")
    missing = sorted({name for start in args.starts for name in USES[start]
                      if not (Path(args.checkpoint) / name).is_file()})
    if missing:
        p.error(f"--checkpoint {args.checkpoint} has no {', '.join(missing)}")
    return args


# ---------------------------------------------------------------------------------- the cache


def read_cache(folder: Path) -> list[dict]:
    """The cached runs, the first of each key (experiments run side by side may repeat one)."""
    if not (folder / CACHE).exists():
        return []
    rows = {}
    for line in (folder / CACHE).read_text(encoding="utf-8").splitlines():
        if line:
            row = json.loads(line)
            rows.setdefault(json.dumps(row["key"], sort_keys=True), row)
    return list(rows.values())


def settings(args, start: str) -> dict:
    """What every run of `start` in this experiment shares; a run is reused only if these match.
    The checkpoint is named relative to the repository when it is in it, so that clones share
    runs, and by a hash of the files the start reads, so that a re-shipped one is run again."""
    shared = {k: getattr(args, k) for k in ("epochs", "min_steps", "max_steps", "batch_size",
                                            "max_seq_len", "precision")}
    if not USES[start]:
        return shared
    checkpoint = Path(args.checkpoint).resolve()
    digest = fingerprint(checkpoint, USES[start])
    if checkpoint.is_relative_to(ROOT):
        checkpoint = checkpoint.relative_to(ROOT)
    return {**shared, "checkpoint": str(checkpoint), "checkpoint_sha256": digest}


@functools.cache
def fingerprint(checkpoint: Path, names: tuple[str, ...]) -> str:
    """A short sha256 of the checkpoint's files `names`, read once per process."""
    digest = hashlib.sha256()
    for name in names:
        digest.update((checkpoint / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_or_run(args, key: dict, cache: list[dict]) -> dict:
    """The cached row for `key`, or the run's, appended to the cache as soon as it is done."""
    for row in cache:
        if row["key"] == key:
            return row
    if key["start"] == "naive_bayes":
        row = {"key": key, **naive_bayes(key["size"], key["seed"])}
    else:
        row = {"key": key, **finetune(args, key["task"], key["start"], key["size"], key["seed"],
                                      key["lr"])}
    with open(args.dir / CACHE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    cache.append(row)
    return row


# ---------------------------------------------------------------------------------- the runs


def init_settings(start: str, checkpoint: str) -> dict:
    return {"scratch": {"init": "scratch", "config_from": checkpoint},
            "ours": {"init": checkpoint}, "minilm": {"init": "minilm"}}[start]


def finetune(args, task: str, start: str, size: str, seed: int, lr: float) -> dict:
    """One run of the fine-tuning recipe (what `bertlab finetune` calls) in a temporary
    directory: what it returns, as results.json."""
    with tempfile.TemporaryDirectory() as out:
        settings = FinetuneSettings(
            out=out, task=task, **init_settings(start, args.checkpoint), lr=lr, seed=seed,
            epochs=args.epochs, min_steps=args.min_steps, max_steps=args.max_steps,
            batch_size=args.batch_size, max_seq_len=args.max_seq_len, precision=args.precision,
            checkpoint_every=0, train_size=None if size == "all" else int(size))
        started = time.perf_counter()
        output = io.StringIO()  # the run's messages and progress bars, shown if it fails
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                results = run_finetune(settings)
        except (ValueError, FloatingPointError) as e:
            sys.exit(f"{output.getvalue()[-2000:]}\n{settings} failed: {e}")
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["init"] = start  # the start's name: its path would be this machine's
    return results


def naive_bayes(size: str, seed: int) -> dict:
    """Word counts -> MultinomialNB on the same training subset a fine-tuning run draws."""
    train = subsample(load_task("genre", "train"), None if size == "all" else int(size), seed)
    test = load_task("genre", "test")
    vectorizer = CountVectorizer()
    model = MultinomialNB().fit(vectorizer.fit_transform([x.text for x in train]),
                                [x.label for x in train])
    predicted = model.predict(vectorizer.transform([x.text for x in test]))
    accuracy = sum(int(p) == x.label for p, x in zip(predicted, test)) / len(test)
    return {"train_size": len(train), "test": {"accuracy": accuracy}}


def chosen_lr(args, cache, task: str, start: str, run: bool = True) -> float | None:
    """--lr's for `start`, else the grid's learning rate with the best dev score at --lr-size,
    seed 0 (running the grid's missing runs if `run`, else None until all of them are cached)."""
    if start in args.lr:
        return args.lr[start]
    scores = {}
    for lr in LR_GRIDS[start]:
        key = {"task": task, "start": start, "size": str(args.lr_size), "seed": 0, "lr": lr,
               **settings(args, start)}
        if run:
            row = cached_or_run(args, key, cache)
            log(key, row)
        else:
            row = next((row for row in cache if row["key"] == key), None)
            if row is None:
                return None
        scores[lr] = row["dev"][TASKS[task].metric]
    return max(scores, key=scores.get)


def log(key: dict, row: dict) -> None:
    metric = TASKS[key["task"]].metric
    dev = f"{row['dev'][metric]:.3f}" if "dev" in row else "-"
    print(f"{key['task']:9} {key['start']:11} size {key['size']:>5} seed {key['seed']} "
          f"lr {key.get('lr', '-')!s:6}  dev {dev:5}  test {row['test'][metric]:.3f}  "
          f"{row.get('wall_seconds', 0):6.1f} s", flush=True)


def experiment(args, cache: list[dict]) -> dict:
    """Run (or find in the cache) every run asked for; return the chosen learning rates."""
    lrs = {}
    for task in args.tasks:
        for start in args.starts:
            lrs[task, start] = lr = chosen_lr(args, cache, task, start)
            for size in args.sizes:
                for seed in args.seeds:
                    key = {"task": task, "start": start, "size": size, "seed": seed, "lr": lr,
                           **settings(args, start)}
                    log(key, cached_or_run(args, key, cache))
        if task == "genre":
            for size in args.sizes:
                for seed in args.seeds:
                    key = {"task": "genre", "start": "naive_bayes", "size": size, "seed": seed}
                    log(key, cached_or_run(args, key, cache))
    return lrs


# ---------------------------------------------------------------------------------- the report


def chosen_rows(args, cache: list[dict], lrs: dict) -> list[dict]:
    """The cached runs asked for (at each start's chosen learning rate), one flat row each:
    task, start, size, examples, seed, lr and the test score under the task's metric's name."""
    rows = []
    for row in cache:
        key = row["key"]
        start = key["start"]
        wanted = (key["task"] in args.tasks and key["size"] in args.sizes
                  and key["seed"] in args.seeds)
        if start == "naive_bayes":
            chosen = wanted and "genre" in args.tasks
        else:
            chosen = (wanted and start in args.starts
                      and lrs.get((key["task"], start)) == key["lr"]
                      and settings(args, start).items() <= key.items())
        if chosen:
            metric = TASKS[key["task"]].metric
            rows.append({"task": key["task"], "start": start, "size": key["size"],
                         "examples": row["train_size"], "seed": key["seed"],
                         "lr": key.get("lr"), metric: row["test"][metric]})
    return rows


def collect(rows: list[dict]) -> dict:
    """{(task, start): {size: [test scores over seeds]}}."""
    table = {}
    for row in rows:
        scores = table.setdefault((row["task"], row["start"]), {}).setdefault(row["size"], [])
        scores.append(row[TASKS[row["task"]].metric])
    return table


def cell(scores: list[float], seeds: int) -> str:
    """Mean ± std in %, and how many of the seeds asked for have run when not all have."""
    if not scores:
        return ""
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    partial = f" ({len(scores)} of {seeds} seeds)" if len(scores) < seeds else ""
    return f"{100 * statistics.mean(scores):.1f} ± {100 * spread:.1f}{partial}"


def by_size(item) -> tuple:
    """Sort key for ((task, start, size), value) items: sizes as numbers, 'all' last."""
    (task, start, size), _ = item
    return task, start, math.inf if size == "all" else int(size)


def markdown(args, table: dict, lrs: dict, cache: list[dict]) -> str:
    lines = ["| task (test metric) | start | lr | " + " | ".join(args.sizes) + " |",
             "|---|---|---|" + "---:|" * len(args.sizes)]
    for task in args.tasks:
        for start in (*args.starts, "naive_bayes"):
            if (task, start) in table:
                lr = f"{lrs[task, start]:g}" if start != "naive_bayes" else "—"
                cells = [cell(table[task, start].get(size, []), len(args.seeds))
                         for size in args.sizes]
                lines.append(f"| {task} ({TASKS[task].metric}) | {start} | {lr} | "
                             + " | ".join(cells) + " |")
    seconds = {}
    for row in cache:
        key = row["key"]
        if "wall_seconds" in row and key["task"] in args.tasks and key["start"] in args.starts:
            seconds.setdefault((key["task"], key["start"], key["size"]), []).append(
                row["wall_seconds"])
    timing = ", ".join(f"{task} {start} at {size}: {statistics.mean(s):.0f} s"
                       for (task, start, size), s in sorted(seconds.items(), key=by_size))
    return "\n".join(lines) + f"\n\nMean wall time of a run (training and scoring): {timing}.\n"


def plot(args, table: dict) -> None:
    tasks = [t for t in args.tasks if any(k[0] == t for k in table)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 2.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sizes = {s: len(load_task(task, "train")) if s == "all" else int(s) for s in args.sizes}
        for (t, start), by_size in sorted(table.items()):
            if t != task:
                continue
            xs = [s for s in args.sizes if s in by_size]
            means = [100 * statistics.mean(by_size[s]) for s in xs]
            spread = [100 * statistics.stdev(by_size[s]) if len(by_size[s]) > 1 else 0
                      for s in xs]
            ax.errorbar([sizes[s] for s in xs], means, yerr=spread, marker="o", ms=3,
                        capsize=2, label=start)
        if task in CHANCE:
            ax.axhline(100 * CHANCE[task], color="gray", ls=":", lw=1, label="chance")
        ax.set(xscale="log", title=task, xlabel="training examples",
               ylabel=f"test {TASKS[task].metric} (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.dir / PLOT, dpi=80)


def write_section(results: Path, section: str) -> None:
    """Replace this experiment's section of RESULTS.md (or add it), leaving the others alone."""
    text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.strip("\n"), text)
    else:
        text = text.rstrip("\n") + "\n\n" + section.strip("\n")
    results.write_text(text + "\n", encoding="utf-8")


def how(args) -> str:
    """The command and the settings, as the section's first paragraph."""
    command = " ".join(["python benchmarks/finetune_experiment.py", *sys.argv[1:]])
    grids = "; ".join(f"{start} fixed at {args.lr[start]:g}" if start in args.lr else
                      f"{start} {', '.join(f'{lr:g}' for lr in LR_GRIDS[start])}"
                      for start in args.starts)
    return (f"`{command}` — {time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} torch "
            f"threads, {args.precision}, max_seq_len {args.max_seq_len}, batch {args.batch_size}, "
            f"{args.epochs:g} epochs but at least {args.min_steps} and at most {args.max_steps} "
            f"updates; seeds {', '.join(map(str, args.seeds))}; learning rate chosen on dev at "
            f"{args.lr_size} examples (seed 0) from: {grids}. Test scores in %, mean ± std over "
            "seeds.")


def main(argv=None):
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    cache = read_cache(args.dir)
    if args.report:
        lrs = {(task, start): chosen_lr(args, cache, task, start, run=False)
               for task in args.tasks for start in args.starts}
    else:
        lrs = experiment(args, cache)
    rows = chosen_rows(args, cache, lrs)
    table = collect(rows)
    plot(args, table)
    write_section(args.dir / "RESULTS.md", f"{HEADING}\n\n{how(args)}\n\n"
                  f"{markdown(args, table, lrs, cache)}\n![learning curves]({PLOT})\n")
    summary = {"command": how(args), "rows": rows}
    (args.dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.dir / 'RESULTS.md'}, {args.dir / PLOT} and {args.dir / SUMMARY}")


if __name__ == "__main__":
    main()
