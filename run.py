#!/usr/bin/env python3
"""Set up and run the course with nothing but Python.

    python3 run.py course   # set up .venv with bertlab and its tools, open JupyterLab on notebooks/
    python3 run.py test     # create .venv if needed, then run the whole test suite
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".bertlab-installed"


def run(*cmd: str | os.PathLike, **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True, cwd=ROOT, **kw)


def setup() -> None:
    """Create .venv and install the project with its dev extra (again when pyproject changes)."""
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    pyproject = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= pyproject.stat().st_mtime:
        return
    run(PYTHON, "-m", "pip", "install", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "-e", ".[dev]")
    STAMP.touch()


def course() -> None:
    setup()
    run(BIN / "jupyter", "lab", "notebooks/")


def test(pytest_args: list[str]) -> None:
    setup()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTLAB_SCALE": "quick", "PYTHONHASHSEED": "0"}
    args = pytest_args or ["-n", "2", "--dist", "loadfile"]
    run(PYTHON, "-m", "pytest", *args, env=env)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("course", "test", "setup"):
        sys.exit(__doc__)
    try:
        {"course": course, "setup": setup}.get(sys.argv[1], lambda: test(sys.argv[2:]))()
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
