"""RoBERTa's question for our tiny BERT: does next-sentence prediction help fine-tuning?

    python benchmarks/nsp_ablation.py --out runs/nsp-ablation [--steps 3000] [--seeds 0 1 2] \
        [--jobs 2]

Pretrains two models with `bertlab pretrain`, the same budget (steps, batch, sequence length,
seed, held-out plays) with NSP and with `--no-nsp`, then fine-tunes each with `bertlab finetune`
on `next_line` (which asks what comes next, NSP's own question) and `genre`, one run per seed, and
prints the held-out MLM accuracy of each and the test scores, mean ± std over seeds, as a
Markdown table for benchmarks/RESULTS.md, and writes every score to benchmarks/nsp_ablation.json
(chapter 10 reads it). A run whose folder holds its result is not run again;
--jobs runs that many at once (each on one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BERTLAB = [sys.executable, "-m", "bertlab.cli"]
RESULTS = Path(__file__).with_name("nsp_ablation.json")
TASKS = {"next_line": "accuracy", "genre": "accuracy"}


def run(args: list[str], done: Path) -> None:
    if not done.exists():
        subprocess.run([*BERTLAB, *args], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def pretrain(out: Path, steps: int, nsp: bool) -> dict:
    flags = [] if nsp else ["--no-nsp"]
    run(["pretrain", "--out", str(out), "--steps", str(steps), "--checkpoint-every",
         str(steps), *flags], out / "model.safetensors")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "eval"][-1]


def finetune(init: Path, task: str, seed: int, out: Path, train_size: int) -> float:
    run(["finetune", "--task", task, "--init", str(init), "--seed", str(seed), "--train-size",
         str(train_size), "--out", str(out)], out / "results.json")
    return json.loads((out / "results.json").read_text())["test"][TASKS[task]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    starts = {"MLM + NSP": args.out / "nsp", "MLM only (--no-nsp)": args.out / "no-nsp"}
    with ThreadPoolExecutor(args.jobs) as pool:
        finals = dict(zip(starts, pool.map(lambda s: pretrain(s, args.steps, s.name == "nsp"),
                                           starts.values())))
        runs = [(name, task, seed) for name in starts for task in TASKS for seed in args.seeds]
        scores = dict(zip(runs, pool.map(lambda r: 100 * finetune(
            starts[r[0]], r[1], r[2], args.out / f"{starts[r[0]].name}-{r[1]}-{r[2]}",
            args.train_size), runs)))
    lines = ["| pretraining | held-out MLM acc | "
             + " | ".join(f"{t} test {m} (%)" for t, m in TASKS.items()) + " |",
             "|---|---:|" + "---:|" * len(TASKS)]
    for name in starts:
        cells = []
        for task in TASKS:
            got = [scores[name, task, seed] for seed in args.seeds]
            spread = f" ± {statistics.stdev(got):.1f}" if len(got) > 1 else ""
            cells.append(f"{statistics.mean(got):.1f}{spread}")
        lines.append(f"| {name} | {finals[name]['mlm_acc']:.1%} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    RESULTS.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/nsp_ablation.py", *sys.argv[1:]]),
        "steps": args.steps, "train_size": args.train_size, "seeds": args.seeds,
        "held_out_mlm_acc": {name: final["mlm_acc"] for name, final in finals.items()},
        "test": [{"pretraining": name, "task": task, "seed": seed, TASKS[task]: score / 100}
                 for (name, task, seed), score in scores.items()]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
