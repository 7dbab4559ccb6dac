"""Exercise notebooks from solution notebooks: solutions become stubs, hidden tests disappear.

A solution notebook marks what students must write and what they must not see:

    def softmax(x):
        \"\"\"Softmax over the last dimension.\"\"\"
        ### BEGIN SOLUTION
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)
        ### END SOLUTION

becomes, in the exercise, the signature and docstring with `raise NotImplementedError("implement
softmax")`. A region outside any function that only binds values (`base_parameters = 110e6`, an
answer to predict or measure) becomes `base_parameters = ...  # YOUR ANSWER HERE`, so that Run
All goes on and the check says it is not answered yet; any other region outside a function becomes
`# YOUR CODE HERE` and `raise NotImplementedError()`. Lines between `### BEGIN HIDDEN TESTS` and
`### END HIDDEN TESTS` are removed with their markers. A written answer (a markdown cell that
nbgrader marks as a solution, graded by hand) keeps its text outside the solution regions; each
region (or the whole cell, if it has none) becomes YOUR ANSWER HERE, as nbgrader does. Outputs
and execution counts are cleared; cell ids and metadata (the nbgrader ids and points) are kept,
with the checksums and lock flags that nbgrader's own generate_assignment writes; the same
solutions always give the same bytes.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import textwrap
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's, for written answers
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


class MarkerError(ValueError):
    """A solution notebook whose markers are malformed, unbalanced or in the wrong cell."""


def python_source(source: str) -> str:
    """Cell source as plain Python: IPython magics (`%time`, `!ls`) become function calls."""
    return TransformerManager().transform_cell(source)


def marked_regions(lines: list[str], markers: tuple[str, str], where: str) -> list[tuple[int, int]]:
    """(begin, end) line indices of each region between the two markers, in order."""
    begin_marker, end_marker = markers
    regions, begin = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == begin_marker:
            if begin is not None:
                raise MarkerError(f"{where}, line {i + 1}: {begin_marker!r} inside another region "
                                  f"(opened on line {begin + 1}); close it with {end_marker!r}")
            begin = i
        elif text == end_marker:
            if begin is None:
                raise MarkerError(f"{where}, line {i + 1}: {end_marker!r} without "
                                  f"{begin_marker!r} before it")
            regions.append((begin, i))
            begin = None
    if begin is not None:
        raise MarkerError(f"{where}, line {begin + 1}: {begin_marker!r} is never closed; "
                          f"add {end_marker!r}")
    return regions


def check_markers(source: str, where: str) -> None:
    """Refuse unbalanced markers, and lines that mention a marker without being exactly one (they
    would leak a solution). Line numbers are the solution notebook's."""
    lines, exact = source.split("\n"), set(SOLUTION + HIDDEN_TESTS)
    for i, line in enumerate(lines):
        if line.strip() not in exact and any(word in line for word in MARKER_WORDS):
            raise MarkerError(f"{where}, line {i + 1}: malformed marker {line.strip()!r}; "
                              f"write it alone on its line as one of {sorted(exact)}")
    for markers in (SOLUTION, HIDDEN_TESTS):
        marked_regions(lines, markers, where)


def enclosing_function(tree: ast.Module, lineno: int, indent: int) -> ast.FunctionDef | None:
    """The innermost function whose body holds line `lineno` (1-based) indented by `indent`."""
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.lineno < lineno <= node.end_lineno and indent > node.col_offset]
    return max(functions, key=lambda node: node.lineno, default=None)


def docstring_lines(function: ast.FunctionDef, begin: int, end: int) -> range:
    """Line indices of the function's docstring if it sits inside the region (begin, end)."""
    first = function.body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    if is_docstring and begin < first.lineno - 1 and first.end_lineno - 1 < end:
        return range(first.lineno - 1, first.end_lineno)
    return range(0)


def answer_names(lines: list[str]) -> list[str]:
    """The names a region binds if it is nothing but `name = value` lines, else []."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(lines)))
    except SyntaxError:
        return []
    if not tree.body or not all(isinstance(node, ast.Assign) and all(
            isinstance(target, ast.Name) for target in node.targets) for node in tree.body):
        return []
    return list(dict.fromkeys(target.id for node in tree.body for target in node.targets))


def stub_solutions(source: str, where: str) -> str:
    """Replace every solution region of a code cell by a stub that raises NotImplementedError."""
    lines = source.split("\n")
    regions = marked_regions(lines, SOLUTION, where)
    if not regions:
        return source
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError as e:
        raise ValueError(f"{where}, line {e.lineno}: not valid Python ({e.msg}); "
                         "fix the solution cell") from None
    for begin, end in reversed(regions):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        function = enclosing_function(tree, begin + 1, len(indent))
        if function is None and (names := answer_names(lines[begin + 1 : end])):
            stub = [f"{indent}{name} = ...  # YOUR ANSWER HERE" for name in names]
        elif function is None:
            stub = [indent + "# YOUR CODE HERE", indent + "raise NotImplementedError()"]
        else:
            stub = [lines[i] for i in docstring_lines(function, begin, end)]
            stub.append(f'{indent}raise NotImplementedError("implement {function.name}")')
        lines[begin : end + 1] = stub
    return "\n".join(lines)


def text_stub(source: str, where: str) -> str:
    """A written answer (a markdown solution cell) as nbgrader releases it: each solution region,
    or the whole cell if it has none, becomes YOUR ANSWER HERE."""
    lines = source.split("\n")
    regions = marked_regions(lines, SOLUTION, where)
    if marked_regions(lines, HIDDEN_TESTS, where):
        raise MarkerError(f"{where}: hidden tests belong in code cells, not in a written answer")
    if not regions:
        return TEXT_STUB
    for begin, end in reversed(regions):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        lines[begin : end + 1] = [indent + TEXT_STUB]
    return "\n".join(lines)


def remove_hidden_tests(source: str, where: str) -> str:
    """Drop every hidden-test region, markers included, and the blank lines it leaves at the end."""
    lines = source.split("\n")
    for begin, end in reversed(marked_regions(lines, HIDDEN_TESTS, where)):
        del lines[begin : end + 1]
    return "\n".join(lines).rstrip()


def is_solution_cell(cell: dict) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False))


def exercise_cell(cell: dict, where: str) -> dict:
    """One cell of the exercise: stubbed, hidden tests removed, outputs cleared."""
    cell = copy.deepcopy(cell)
    check_markers(cell.source, where)
    if cell.cell_type != "code":
        if is_solution_cell(cell):
            cell.source = text_stub(cell.source, where)
        elif any(word in cell.source for word in MARKER_WORDS):
            raise MarkerError(f"{where}: markers are only understood in code cells and in "
                              "written answers (markdown cells with nbgrader's solution: true)")
        return cell
    source = stub_solutions(cell.source, where)
    if is_solution_cell(cell) and source == cell.source and "NotImplementedError" not in source:
        raise MarkerError(f"{where}: solution cell without {SOLUTION[0]!r} / {SOLUTION[1]!r}; "
                          "mark the code students must write")
    cell.source = remove_hidden_tests(source, where)
    cell.outputs = []
    cell.execution_count = None
    cell.metadata.pop("execution", None)  # nbclient's timestamps are output, not content
    return cell


def grade_flags(cell: dict) -> tuple[bool, bool, bool]:
    """(grade, solution, locked) as nbgrader reads them (nbgrader.utils.is_grade, ...)."""
    meta = cell.get("metadata", {}).get("nbgrader")
    if meta is None:
        return False, False, False
    grade, solution = bool(meta.get("grade", False)), bool(meta.get("solution", False))
    return grade, solution, not solution and (grade or bool(meta.get("locked", False)))


def nbgrader_checksum(cell: dict) -> str:
    """nbgrader.utils.compute_checksum: what nbgrader checks a released cell against."""
    grade, solution, locked = grade_flags(cell)
    meta = cell["metadata"]["nbgrader"]
    parts = [cell["source"], cell["cell_type"], str(grade), str(solution), str(locked),
             meta["grade_id"]] + ([str(float(meta["points"]))] if grade else [])
    digest = hashlib.md5()
    for part in parts:
        digest.update(part.encode("utf-8"))
    return digest.hexdigest()


def released(cell: dict) -> dict:
    """The cell with the metadata nbgrader's generate_assignment gives a released cell: locked
    cells undeletable (LockCells' defaults), and the checksum of every graded, solution or locked
    cell (ComputeChecksums), so that `nbgrader validate` and `autograde` accept it."""
    grade, solution, locked = grade_flags(cell)
    if solution or grade:
        cell.metadata["deletable"] = False
    if (grade and not solution) or locked:
        cell.metadata["deletable"] = cell.metadata["editable"] = False
    if (grade or solution or locked) and "grade_id" in cell.metadata.nbgrader:
        cell.metadata.nbgrader["checksum"] = nbgrader_checksum(cell)
        cell.metadata.nbgrader["cell_type"] = cell.cell_type
    return cell


def make_exercise(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise notebook for solution notebook `nb` (named `name` in error messages)."""
    exercise = copy.deepcopy(nb)
    exercise.cells = [released(exercise_cell(cell, f"{name}, cell {i} (id {cell.get('id', '?')})"))
                      for i, cell in enumerate(nb.cells)]
    return exercise


def exercise_text(path: Path) -> str:
    """The exact text of the exercise generated from the solution notebook at `path`."""
    nb = nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)
    return nbformat.writes(make_exercise(nb, Path(path).name)) + "\n"


def solution_notebooks(source: Path) -> list[Path]:
    """`source` itself if it is a notebook, else the notebooks directly inside it, sorted."""
    source = Path(source)
    if source.is_file():
        if source.suffix != ".ipynb":
            raise ValueError(f"{source} is not a notebook (.ipynb)")
        return [source]
    if not source.is_dir():
        raise ValueError(f"{source} does not exist")
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"{source} holds no .ipynb notebooks")
    return notebooks


def make_exercises(source: Path, dest: Path) -> list[Path]:
    """Write the exercise for each solution notebook in `source` into folder `dest`."""
    texts = {path.name: exercise_text(path) for path in solution_notebooks(source)}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (dest / name).write_bytes(text.encode("utf-8"))
    return [dest / name for name in texts]


def stale_exercises(source: Path, dest: Path) -> list[str]:
    """What differs between folder `dest` and the exercises `source` generates now; [] if none."""
    expected = {path.name: exercise_text(path) for path in solution_notebooks(source)}
    present = {path.name for path in Path(dest).glob("*.ipynb")}
    problems = [f"{name}: missing" for name in sorted(expected.keys() - present)]
    problems += [f"{name}: has no solution notebook" for name in sorted(present - expected.keys())]
    problems += [f"{name}: differs from its solution notebook" for name in sorted(expected)
                 if name in present
                 and (Path(dest) / name).read_bytes() != expected[name].encode("utf-8")]
    return problems
