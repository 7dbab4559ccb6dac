"""What is graded: the instructor's assignments and the students' submissions.

Which assignment, which student. `--solutions` is a solution notebook or a folder of them; each is
an assignment named by its file name. A submitted notebook named like an assignment
(`submissions/alice/03_attention.ipynb`) is that assignment, and the student is the folder it is
in (`alice`). When there is a single assignment, a notebook with any other name
(`submissions/alice.ipynb`) is that assignment and the student is the file's stem. Any other
notebook gets a row (student: its folder) saying it could not be matched.

Intake never loses a row: a symbolic link, anything but a regular file, a file that is not UTF-8
or not a notebook each get a row with the reason; two files of one student for one assignment get
a row each, with a note; nbformat 3 and older notebooks are upgraded. Every file is read (without
following links) before the first kernel starts.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..authoring import is_solution_cell, python_source, solution_notebooks, stub_solutions

MAX_SUBMISSION_BYTES = 50 << 20


@dataclass
class Cell:
    """A code cell of the instructor's notebook."""

    source: str
    kind: str  # "setup", "solution" or "test"
    grade_id: str = ""
    points: float = 0.0

    @property
    def exercise(self) -> str:
        return self.grade_id.removesuffix("-test")

    @property
    def calls_checks(self) -> bool:
        """Is this a test of the course's own (`checks.softmax(softmax)`)? Its verdict is then
        decided outside the student's kernel (verdicts.py)."""
        return self.kind == "test" and any(
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "checks"
            for node in ast.walk(cell_ast(self.source)))

    @property
    def check_arguments(self) -> dict[str, str]:
        """The checks this test calls with a variable: `checks.base_parameters(base_parameters)`
        gives {"base_parameters": "base_parameters"} (for the checks of values, `Answer`s)."""
        found = {}
        for node in ast.walk(cell_ast(self.source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "checks" \
                    and len(node.args) == 1 and isinstance(node.args[0], ast.Name):
                found[node.func.attr] = node.args[0].id
        return found

    @property
    def label(self) -> str:
        return {"setup": "a setup cell", "solution": f"your cell {self.grade_id!r}",
                "test": f"the test of {self.exercise!r}"}[self.kind]


@dataclass
class Assignment:
    name: str  # the solution notebook's stem
    cells: list[Cell]
    digest: str  # of the solution notebook: a row graded against other solutions is stale
    manual: dict[str, float] = field(default_factory=dict)  # graded by hand: grade_id -> points

    @classmethod
    def load(cls, path: Path) -> Assignment:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        cells, manual = [], {}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and meta.get("solution"):  # a written answer, or code, by hand
                manual[meta["grade_id"]] = float(meta.get("points", 0))
            if cell.cell_type != "code":
                continue
            if is_solution_cell(cell):
                cells.append(Cell(cell.source, "solution", meta["grade_id"]))
            elif meta.get("grade", False):
                cells.append(Cell(cell.source, "test", meta["grade_id"], float(meta["points"])))
            else:
                cells.append(Cell(cell.source, "setup"))
        return cls(path.stem, cells, hashlib.sha256(text.encode()).hexdigest(), manual)

    @property
    def exercises(self) -> dict[str, float]:
        """Exercise id -> points, in notebook order; then the cells graded by hand."""
        points: dict[str, float] = {}
        for cell in self.cells:
            if cell.kind == "test":
                points[cell.exercise] = points.get(cell.exercise, 0.0) + cell.points
        return points | self.manual

    @property
    def solution_names(self) -> list[str]:
        """The names the solution cells define (the student's functions)."""
        return sorted(set().union(*(bound_names(c.source) for c in self.cells
                                    if c.kind == "solution")))

    @property
    def solution_ids(self) -> list[str]:
        return [cell.grade_id for cell in self.cells if cell.kind == "solution"]

    def stub(self, cell: Cell) -> str:
        return stub_solutions(cell.source, f"{self.name}, cell {cell.grade_id!r}")


def load_assignments(solutions: Path) -> dict[str, Assignment]:
    return {path.name: Assignment.load(path) for path in solution_notebooks(solutions)}


@dataclass
class Submission:
    student: str
    path: Path
    data: bytes
    assignment: Assignment | None  # None: could not tell which
    problem: str = ""  # why it cannot be graded, if it cannot
    note: str = ""  # for the notes column, e.g. another file of the same student and assignment
    manual: dict[str, tuple[float, str]] = field(default_factory=dict)  # by hand: points, comment

    @property
    def key(self) -> tuple[str, str, str]:
        """The gradebook row: student, assignment, file."""
        return self.student, self.assignment.name if self.assignment else "", str(self.path)

    @property
    def digest(self) -> str:
        """Of what was graded: the file, and the solution it was graded against."""
        solution = self.assignment.digest if self.assignment else ""
        scores = json.dumps(sorted(self.manual.items())) if self.manual else ""
        return hashlib.sha256(self.data + solution.encode() + scores.encode()).hexdigest()[:16]


def candidates(path: Path) -> list[Path]:
    """`path` if it is a file (or link), else the notebooks and links to folders beneath it,
    sorted; links are listed, never followed."""
    if not path.is_dir() or path.is_symlink():
        return [path]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        found += [Path(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))]
        found += [Path(folder, f) for f in files if f.endswith(".ipynb")]
    return sorted(found)


def read_regular(path: Path) -> tuple[bytes, str]:
    """The file's first MAX_SUBMISSION_BYTES + 1 bytes, or why it is not read."""
    if path.is_symlink():
        return b"", f"{path.name} is a symbolic link (to {os.readlink(path)}): hand in the file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return b"", f"cannot open {path.name}: {e.strerror}"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b"", f"{path.name} is not a regular file"
        return f.read(MAX_SUBMISSION_BYTES + 1), ""


def find_submissions(paths: list[Path], assignments: dict[str, Assignment]) -> list[Submission]:
    """Every notebook under `paths`, matched to its student and assignment, read into memory."""
    files = []
    for path in map(Path, paths):
        if not path.exists() and not path.is_symlink():
            raise ValueError(f"{path} does not exist")
        files += candidates(path)
    submissions = []
    for path in files:
        folder = path.absolute().parent.name
        if path.name in assignments:
            student, assignment = folder, assignments[path.name]
        elif len(assignments) == 1:
            student, assignment = path.stem, next(iter(assignments.values()))
        else:
            student, assignment = folder, None
        data, problem = read_regular(path)
        submissions.append(Submission(student, path.absolute(), data, assignment, problem))
    note_duplicates(submissions)
    return submissions


def note_duplicates(submissions: list[Submission]) -> None:
    """Each of several files of one student for one assignment is graded, with a note."""
    by_key: dict[tuple[str, str], list[Submission]] = {}
    for s in submissions:
        by_key.setdefault(s.key[:2], []).append(s)
    for (student, assignment), group in by_key.items():
        if len(group) > 1 and assignment:
            files = ", ".join(str(s.path) for s in group)
            for s in group:
                s.note = (f"{len(group)} files of {student!r} for {assignment}: {files}; each is "
                          "graded, keep one")


def student_cells(data: bytes) -> dict[str, str]:
    """The code cells of a submitted notebook by nbgrader grade_id; ValueError if unreadable."""
    if len(data) > MAX_SUBMISSION_BYTES:
        raise ValueError(f"the file is over {MAX_SUBMISSION_BYTES >> 20} MB")
    if not data.strip():
        raise ValueError("the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {data[e.start]:#04x} at position {e.start}): "
                         "save the notebook as UTF-8 (Jupyter always does)") from None
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a readable notebook ({e})") from None
    if isinstance(nb, dict) and isinstance(nb.get("nbformat"), int) and nb["nbformat"] < 4:
        nb = upgraded(nb)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook in the current format (no list of cells)")
    found: dict[str, str] = {}
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata")
        nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
        source = cell.get("source")
        source = "".join(source) if isinstance(source, list) else source
        if isinstance(grade_id, str) and isinstance(source, str):
            found.setdefault(grade_id, source)
    return found


def upgraded(nb: dict) -> dict:
    """An nbformat 1-3 notebook as nbformat 4 (plain JSON data)."""
    version = nb["nbformat"]
    try:
        return json.loads(json.dumps(nbformat.convert(nbformat.from_dict(nb), 4)))
    except Exception as e:  # nbformat's converters assume a valid notebook of that version
        raise ValueError(f"an nbformat {version} notebook that could not be upgraded "
                         f"({type(e).__name__}: {e})") from None


def cell_ast(source: str) -> ast.Module:
    """A cell's syntax tree; empty if it is not valid Python (running it will say why)."""
    try:
        return ast.parse(python_source(source))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def bound_names(source: str) -> set[str]:
    """The names a cell binds at its top level: assignments, imports, defs, loop variables."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(child.name)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.add(child.id)
            elif isinstance(child, ast.alias) and child.name != "*":
                names.add((child.asname or child.name).split(".")[0])
            elif not isinstance(child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                                        ast.GeneratorExp)):
                visit(child)

    visit(cell_ast(source))
    return names


def imported_modules(source: str) -> set[str]:
    """The modules a cell imports; `from x import y` gives x and x.y (y may be a module)."""
    modules = set()
    for node in ast.walk(cell_ast(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules |= {node.module} | {f"{node.module}.{a.name}" for a in node.names
                                        if a.name != "*"}
    return modules
