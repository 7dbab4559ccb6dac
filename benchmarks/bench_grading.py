"""What `bertlab grade`'s sandbox costs: seconds per notebook, and a kernel's start-up.

    python benchmarks/bench_grading.py [--count 20] [--jobs 2] [--no-sandbox] [--startup 5]

Grades COUNT copies of the full solution of 01_tokens (JOBS at a time) and prints the wall time
per notebook and the mean time each notebook took; then starts STARTUP kernels one after another,
with and without the sandbox, and prints the median time until each answered.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bertlab.course.grading import Limits, grade
from bertlab.course.grading.grader import Kernel

ROOT = Path(__file__).resolve().parents[1]


def per_notebook(count: int, jobs: int, sandbox: bool) -> tuple[float, float]:
    """(wall seconds / notebook, mean seconds of one notebook) for `count` full submissions."""
    with tempfile.TemporaryDirectory() as tmp:
        solution = ROOT / "solutions" / "01_tokens.ipynb"
        for i in range(count):
            (Path(tmp) / "submissions" / f"s{i:02}").mkdir(parents=True)
            shutil.copy(solution, Path(tmp) / "submissions" / f"s{i:02}" / solution.name)
        started = time.monotonic()
        results = grade([Path(tmp) / "submissions"], solution, Path(tmp) / "out", jobs=jobs,
                        sandbox=sandbox)
        wall = time.monotonic() - started
    automatic = [(r.scores.get(e), p) for r in results for e, p in r.exercises.items()
                 if not r.kinds.get(e, "").startswith("awaiting manual")]
    assert all(got == possible for got, possible in automatic), [r.notes for r in results]
    return wall / count, statistics.mean(r.seconds for r in results)


def startup(times: int, sandbox: bool) -> float:
    """Median seconds from starting a kernel to its first answer."""
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(times):
            started = time.monotonic()
            with Kernel(Limits(), Path(tmp) / "kernel.log", sandbox):
                seconds.append(time.monotonic() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--startup", type=int, default=5)
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false")
    args = parser.parse_args()
    wall, each = per_notebook(args.count, args.jobs, args.sandbox)
    print(f"{args.count} notebooks of 01_tokens, --jobs {args.jobs}, sandbox {args.sandbox}: "
          f"{wall:.2f} s per notebook (wall), {each:.2f} s each")
    if args.startup:
        inside, outside = startup(args.startup, True), startup(args.startup, False)
        print(f"kernel start-up (median of {args.startup}): {inside:.2f} s in the sandbox, "
              f"{outside:.2f} s without: the sandbox costs {inside - outside:+.2f} s")


if __name__ == "__main__":
    main()
