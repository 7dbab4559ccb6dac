"""Committed notebooks must be executed. nbval re-runs each code cell and compares its output with
the committed one, but it skips cells without an execution count: a notebook saved unexecuted
would pass while checking nothing."""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [*sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "solutions").glob("*.ipynb"))]
HOW = ("execute it top to bottom and commit the outputs: OMP_NUM_THREADS=1 BERTLAB_SCALE=quick "
       "jupyter nbconvert --to notebook --execute --inplace {}")


def code_cells(path: Path) -> list[dict]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, "no notebooks found in notebooks/ or solutions/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_committed_executed_at_quick_scale(path):
    cells = code_cells(path)
    name = path.relative_to(ROOT)
    counts = [c["execution_count"] for c in cells]
    never_run = [i for i, n in enumerate(counts) if n is None]
    assert not never_run, f"{name}: code cells {never_run} were never run; " + HOW.format(name)
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name}: execution counts {counts} are not 1, 2, 3, ...: the notebook was not run once "
        "from the top in a fresh kernel; " + HOW.format(name))
    assert any(c["outputs"] for c in cells), f"{name} has no outputs; " + HOW.format(name)
    first = "".join(o.get("text", "") for o in cells[0]["outputs"])
    assert first.startswith("scale: quick |"), (
        f"{name}: the first code cell printed {first!r}, not 'scale: quick | ...'; the committed "
        "outputs must come from a quick-scale run; " + HOW.format(name))
