"""`bertlab check NOTEBOOK`: a student runs their own notebook's visible checks before handing it
in, and learns which exercises would score and which would not.

The notebook runs from the top in a fresh kernel (in the notebook's folder, as Jupyter would run
it; no sandbox, since it is the student's own code), every cell even after one that fails. Then
each graded cell says what it would earn: a test whose checks all passed (✓), or not (✗, with the
check's first problem, or the error the cell raised); a cell graded by hand is listed as such.
The hidden tests are not in a student's notebook: a ✓ here is the visible checks' verdict.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .intake import cell_ast

STATES = ("import json; from bertlab.course.checks import framework; "
          "print(json.dumps(framework.STATES))")


@dataclass
class Verdict:
    grade_id: str
    points: float
    scores: bool | None  # None: graded by hand
    message: str

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "·"}[self.scores]
        unit = "point" if self.points == 1 else "points"
        return f"{mark} {self.grade_id} ({self.points:g} {unit}): {self.message}"


def checks_called(source: str) -> list[str]:
    """The names of the checks a cell calls, `checks.NAME(...)`, in order."""
    return list(dict.fromkeys(
        node.func.attr for node in ast.walk(cell_ast(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "checks"))


def run(path: Path, cell_seconds: float) -> tuple[nbformat.NotebookNode, dict[str, str]]:
    """The notebook executed from the top, and the last report of each check that ran."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_seconds, allow_errors=True,
                            resources={"metadata": {"path": str(Path(path).parent)}})
    probe = nbformat.v4.new_code_cell(STATES)
    nb.cells.append(probe)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    nb.cells.pop()
    text = "".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream")
    try:
        return nb, json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return nb, {}


def error_of(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            first = (output.evalue.splitlines() or [""])[0]
            return f"{output.ename}: {first}".strip(": ")[:300]
    return None


def verdicts(nb: nbformat.NotebookNode, states: dict[str, str]) -> list[Verdict]:
    """What each graded cell of the executed notebook would earn."""
    found = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade"):
            continue
        grade_id, points = meta.get("grade_id", "?"), float(meta.get("points", 0))
        if meta.get("solution"):
            found.append(Verdict(grade_id, points, None, "graded by hand"))
            continue
        reports = [states.get(name, f"✗ {name}: did not run") for name in checks_called(
            cell.source)]
        failed = [r.splitlines()[0] for r in reports if not r.startswith("✓")]
        if error := error_of(cell):
            found.append(Verdict(grade_id, points, False, f"the cell raised {error}"))
        elif failed:
            found.append(Verdict(grade_id, points, False, failed[0]))
        else:
            found.append(Verdict(grade_id, points, True, "; ".join(reports) or "ran without error"))
    return found


def summary(verdicts: list[Verdict]) -> str:
    """One line: how many graded cells would score, and their points."""
    scored = [v for v in verdicts if v.scores is not None]
    by_hand = sum(v.points for v in verdicts if v.scores is None)
    return (f"{sum(bool(v.scores) for v in scored)} of {len(scored)} graded cells would score: "
            f"{sum(v.points for v in scored if v.scores):g} of "
            f"{sum(v.points for v in scored):g} points"
            + (f" (and {by_hand:g} points graded by hand)" if len(scored) < len(verdicts) else ""))


def check_notebook(path: Path, cell_seconds: float = 600) -> list[Verdict]:
    """Run the notebook at `path` in a fresh kernel; what each of its graded cells would earn."""
    if not Path(path).is_file():
        raise ValueError(f"{path} is not a notebook file")
    nb, states = run(Path(path), cell_seconds)
    return verdicts(nb, states)
