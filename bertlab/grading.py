"""`bertlab grade`: run each student's notebook in a locked-down kernel and score it.

Which assignment, which student. `--solutions` is a solution notebook or a folder of them; each is
an assignment named by its file name. A submitted notebook named like an assignment
(`submissions/alice/03_attention.ipynb`) is that assignment, and the student is the folder it is
in (`alice`). When there is a single assignment, a notebook with any other name
(`submissions/alice.ipynb`) is that assignment and the student is the file's stem. Any other
notebook gets a row (student: its folder) saying it could not be matched.

What runs. The grader assembles the notebook itself: the instructor's cells everywhere (setup,
visible checks, hidden tests), except that each solution cell is the student's cell with the same
nbgrader `grade_id` (or the exercise's stub, which raises, if the student has none). A test cell
earns its points if it runs without an exception, as reported by the kernel's reply (printed text
is never read). Every file is read before the first kernel starts, and the gradebook is written by
the grader alone.

Each notebook gets a fresh kernel in an empty temporary folder and a small environment, with
limits on memory and file size, no way to start processes (a seccomp filter: a fork bomb stops at
its first fork), no way to write anywhere but that folder (Landlock, Linux 5.13+: not the
solutions, not the other students' files, not even as root), a time limit per cell and per
notebook, and, when the grader runs as root and the Python it runs is open to other users, a user
of its own (uid 65000 + job slot). Before the student's first cell, the kernel snapshots the
reference code (builtins, torch, every loaded bertlab module, whatever the instructor's cells
import, and the kernel itself); after every cell, anything replaced is put back, and before each
test the names the instructor's cells defined (`torch`, `checks`, ...) are bound again. A
notebook that tampered with the references scores 0 (see grading_runtime for what is watched and
what is not).

Failures cost only what they break. A cell that raises fails its exercise. A cell that runs past
its time limit is interrupted; if it cannot be interrupted, or if a cell kills the kernel
(`os._exit`, a crash), the kernel is restarted and the notebook is run again from the top without
that cell. When the notebook's time is used up, the cells left count as failed. An unreadable,
empty or foreign notebook gets a row of zeros. The `notes` column says why, for every row that
lost points to anything but a failing test.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from . import grading_runtime
from .authoring import is_solution_cell, python_source, solution_notebooks, stub_solutions
from .grading_runtime import Limits

SANDBOX_UID = 65000  # + job slot; Debian reserves 65000-65533, so no real user has these
MAX_SUBMISSION_BYTES = 50 << 20
MAX_REPLY_BYTES = 4 << 20  # a bigger reply (a gigantic error message) is dropped like a crash
MAX_MESSAGE_CHARS = 500  # of an error message in the feedback
GUARD_SECONDS = 30
INTERRUPT_SECONDS = 3  # how long an interrupted cell gets to stop before the kernel is killed
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in the kernel's tracebacks
RUNTIME = "__import__('bertlab.grading_runtime', fromlist=['start'])"


# ----------------------------------------------------------------------------- the assignments


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
    def label(self) -> str:
        return {"setup": "a setup cell", "solution": f"your cell {self.grade_id!r}",
                "test": f"the test of {self.exercise!r}"}[self.kind]


@dataclass
class Assignment:
    name: str  # the solution notebook's stem
    cells: list[Cell]

    @classmethod
    def load(cls, path: Path) -> Assignment:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        cells = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            meta = cell.metadata.get("nbgrader", {})
            if is_solution_cell(cell):
                cells.append(Cell(cell.source, "solution", meta["grade_id"]))
            elif meta.get("grade", False):
                cells.append(Cell(cell.source, "test", meta["grade_id"], float(meta["points"])))
            else:
                cells.append(Cell(cell.source, "setup"))
        return cls(path.stem, cells)

    @property
    def exercises(self) -> dict[str, float]:
        """Exercise id -> points, in notebook order."""
        points: dict[str, float] = {}
        for cell in self.cells:
            if cell.kind == "test":
                points[cell.exercise] = points.get(cell.exercise, 0.0) + cell.points
        return points

    @property
    def solution_ids(self) -> list[str]:
        return [cell.grade_id for cell in self.cells if cell.kind == "solution"]

    def stub(self, cell: Cell) -> str:
        return stub_solutions(cell.source, f"{self.name}, cell {cell.grade_id!r}")


def load_assignments(solutions: Path) -> dict[str, Assignment]:
    return {path.name: Assignment.load(path) for path in solution_notebooks(solutions)}


# ----------------------------------------------------------------------------- the submissions


@dataclass
class Submission:
    student: str
    path: Path
    data: bytes
    assignment: Assignment | None  # None: could not tell which


def find_submissions(paths: list[Path], assignments: dict[str, Assignment]) -> list[Submission]:
    """Every notebook under `paths`, matched to its student and assignment, read into memory."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path} does not exist")
    submissions, seen = [], {}
    for path in files:
        folder = path.resolve().parent.name
        if path.name in assignments:
            student, assignment = folder, assignments[path.name]
        elif len(assignments) == 1:
            student, assignment = path.stem, next(iter(assignments.values()))
        else:
            student, assignment = folder, None
        key = (student, assignment.name if assignment else path.name)
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} are both {key[1]} of student {student!r}; "
                             "keep one")
        seen[key] = path
        with open(path, "rb") as f:
            submissions.append(Submission(student, path, f.read(MAX_SUBMISSION_BYTES + 1),
                                          assignment))
    return submissions


def student_cells(data: bytes) -> dict[str, str]:
    """The code cells of a submitted notebook by nbgrader grade_id; ValueError if unreadable."""
    if len(data) > MAX_SUBMISSION_BYTES:
        raise ValueError(f"the file is over {MAX_SUBMISSION_BYTES >> 20} MB")
    if not data.strip():
        raise ValueError("the file is empty")
    try:
        nb = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a readable notebook ({e})") from None
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


# ----------------------------------------------------------------------------- the kernel


@dataclass
class Outcome:
    """What became of one cell."""

    status: str  # "ok", "error", "timeout", "died" or "not run"
    message: str = ""
    answers: dict = field(default_factory=dict)  # the kernel's answers to user expressions


class KernelError(RuntimeError):
    """The grading kernel did not start."""


class Kernel:
    """An ipykernel in an empty temporary folder, with resource limits (as root: its own user)."""

    def __init__(self, limits: Limits, uid: int | None):
        self.limits, self.secret = limits, secrets.token_hex(16)  # signs the guard's answers
        self.workdir = Path(tempfile.mkdtemp(prefix="bertlab-grade-"))
        self.log = self.workdir / "kernel.log"  # the kernel's own stdout and stderr
        connection, info = write_connection_file(str(self.workdir / "kernel.json"),
                                                 ip="127.0.0.1", key=secrets.token_hex(32).encode())
        identity = {}
        if uid is not None:
            identity = {"user": uid, "group": uid, "extra_groups": []}
            for path in (self.workdir, connection):
                os.chown(path, uid, uid)
        command = [sys.executable, grading_runtime.__file__, "--memory-mb", str(limits.memory_mb),
                   "--fsize-mb", str(limits.file_mb), "--", sys.executable, "-m",
                   "ipykernel_launcher", "-f", connection, "--HistoryManager.enabled=False"]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=kernel_env(self.workdir), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **identity)
        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self.client = BlockingKernelClient(context=context)
        self.client.load_connection_info(info)
        self.client.start_channels(iopub=False, stdin=False, hb=False, control=False)

    def start(self, modules: list[str]) -> None:
        """Wait for the kernel, then import `modules` and snapshot the references, before any
        student code runs (as a user expression, like every later check: see guard)."""
        expression = f"{RUNTIME}.start({self.secret!r}, {modules!r})"
        outcome = self.execute("", self.limits.startup_seconds, silent=True,
                               expressions={"start": expression})
        answer = outcome.answers.get("start", {})
        if answer.get("status") != "ok":
            problem = outcome.message or f"{answer.get('ename')}: {answer.get('evalue')}"
            log = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise KernelError(f"the grading kernel did not start ({outcome.status}: {problem}); "
                              f"its log ends: {' / '.join(log)}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def guard(self, record: list[str], rebind: bool) -> Outcome:
        """Call the kernel's guard (see grading_runtime.after_cell); "ok" only if it answered."""
        nonce = secrets.token_hex(16)
        expression = f"{RUNTIME}.after_cell({record!r}, {rebind}, {nonce!r})"
        outcome = self.execute("", GUARD_SECONDS, silent=True, expressions={"guard": expression})
        if outcome.status != "ok":
            return outcome
        answer = outcome.answers.get("guard", {})
        if answer.get("status") == "error":
            return Outcome("error", answer["evalue"] if answer.get("ename") == "Tampering"
                           else error_message(answer))
        if answer.get("data", {}).get("text/plain") != repr(grading_runtime.sign(
                self.secret.encode(), nonce)):
            return Outcome("error", "the kernel answered for the grader's check without running it")
        return Outcome("ok")

    def execute(self, code: str, seconds: float, silent: bool = False,
                expressions: dict[str, str] | None = None) -> Outcome:
        """Run `code`; past `seconds`, interrupt it, and kill the kernel if that does not work.
        A successful outcome carries the kernel's answers to the user `expressions`."""
        msg_id = self.client.execute(code, silent=silent, store_history=not silent,
                                     user_expressions=expressions or {}, allow_stdin=False,
                                     stop_on_error=False)
        reply = self.reply(msg_id, seconds)
        if reply is None and self.alive():
            os.kill(self.process.pid, signal.SIGINT)
            if self.reply(msg_id, INTERRUPT_SECONDS) is None:
                self.kill()
            return Outcome("timeout", f"still running after the time limit of {seconds:.0f} s")
        if reply is None:
            return Outcome("died", f"the kernel died (exit code {self.process.returncode})")
        content = reply["content"]
        if content["status"] == "ok":
            return Outcome("ok", answers=content.get("user_expressions", {}))
        return Outcome("error", error_message(content))

    def reply(self, msg_id: str, seconds: float) -> dict | None:
        """The reply to request `msg_id`, or None if none came in time or the kernel died."""
        deadline = time.monotonic() + seconds
        while self.alive() and (left := deadline - time.monotonic()) > 0:
            try:
                message = self.client.get_shell_msg(timeout=min(left, 0.25))
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") == msg_id:
                return message
        return None

    def kill(self) -> None:
        """The kernel is a single process: the launcher's seccomp filter forbids it to fork."""
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        self.client.stop_channels()
        self.client.context.destroy(linger=0)
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def error_message(content: dict) -> str:
    """"ename: evalue" of an error reply; for a bare `assert`, the line that failed."""
    message = f"{content.get('ename', '')}: {content.get('evalue', '')}".strip(": ")
    if content.get("evalue"):
        return message
    lines = ANSI.sub("", "\n".join(content.get("traceback", []))).splitlines()
    failed = [line.split("---->", 1)[1].strip() for line in lines if "---->" in line]
    return f"{message} in `{failed[-1].split(' ', 1)[-1]}`" if failed else message or "error"


def kernel_env(workdir: Path) -> dict[str, str]:
    """A small, known environment: none of the instructor's variables reach the student's code."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}", "HOME": str(workdir),
           "TMPDIR": str(workdir), "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
           "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1", "JPY_PARENT_PID": str(os.getpid())}
    if "BERTLAB_SCALE" in os.environ:
        env["BERTLAB_SCALE"] = os.environ["BERTLAB_SCALE"]
    return env


def sandbox_user(slot: int) -> int | None:
    """The user a kernel runs as: as root, SANDBOX_UID + slot, if that user can run this Python
    and import bertlab; otherwise None, the grader's own user."""
    if os.geteuid() != 0:
        return None
    uid = SANDBOX_UID + slot
    probe = "import importlib.util as u; assert u.find_spec('bertlab') and u.find_spec('ipykernel')"
    try:
        return uid if subprocess.run([sys.executable, "-c", probe], user=uid, group=uid,
                                     extra_groups=[], cwd="/", env={}, capture_output=True,
                                     check=False).returncode == 0 else None
    except PermissionError:  # this Python lives in a folder other users cannot enter
        return None


# ----------------------------------------------------------------------------- grading


@dataclass
class Result:
    student: str
    assignment: str  # "" if it could not be told
    path: Path
    exercises: dict[str, float]  # exercise -> points possible
    scores: dict[str, float] = field(default_factory=dict)  # exercise -> points earned
    messages: dict[str, list[str]] = field(default_factory=dict)  # exercise -> what went wrong
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def max(self) -> float:
        return sum(self.exercises.values())


def graded_sources(assignment: Assignment, theirs: dict[str, str], result: Result) -> list[str]:
    """The instructor's cells, with the student's own solution cells (or the stubs)."""
    missing = [grade_id for grade_id in assignment.solution_ids if grade_id not in theirs]
    if missing:
        result.notes.append(f"cells missing: {', '.join(missing)} (graded as not done)")
    return [theirs.get(cell.grade_id, assignment.stub(cell)) if cell.kind == "solution"
            else cell.source for cell in assignment.cells]


class NotebookRun:
    """The graded cells run in a kernel, rerun from the top without any cell that leaves the
    kernel dead (a crash, or a cell that could not be interrupted)."""

    def __init__(self, assignment: Assignment, sources: list[str], limits: Limits,
                 uid: int | None):
        self.cells, self.sources = assignment.cells, sources
        self.limits, self.uid = limits, uid
        self.theirs = set().union(*(bound_names(c.source) for c in self.cells
                                    if c.kind == "solution"))
        self.modules = sorted(set().union(*(imported_modules(c.source) for c in self.cells
                                            if c.kind != "solution")))
        self.outcomes = [Outcome("not run")] * len(self.cells)
        self.skipped: set[int] = set()
        self.budget = limits.notebook_seconds
        self.notes: list[str] = []
        self.tampering = ""  # what the guard found, if anything

    def run(self) -> list[Outcome]:
        while True:
            with Kernel(self.limits, self.uid) as kernel:
                kernel.start(self.modules)
                crashed = self.one_pass(kernel)
            if crashed is None:
                return self.outcomes
            self.skipped.add(crashed)
            self.notes.append(f"{self.cells[crashed].label}: {self.outcomes[crashed].message}; "
                              "reran the notebook without it")

    def one_pass(self, kernel: Kernel) -> int | None:
        """Run each cell not skipped, checking for tampering in between; return the index of a
        cell that left the kernel dead, or None."""
        for i in set(range(len(self.cells))) - self.skipped:
            self.outcomes[i] = Outcome("not run")
        ran = None
        for i, cell in enumerate(self.cells):
            if i in self.skipped or self.budget <= 0:
                continue
            if ran is not None and not self.guard(kernel, ran, rebind=cell.kind == "test"):
                return ran if self.outcomes[ran].status == "died" else None
            started = time.monotonic()
            self.outcomes[i] = kernel.execute(self.sources[i],
                                              min(self.limits.cell_seconds, self.budget))
            self.budget -= time.monotonic() - started
            if not kernel.alive():
                return i
            ran = i
        if ran is not None and not self.guard(kernel, ran, rebind=False):
            return ran if self.outcomes[ran].status == "died" else None
        return None

    def guard(self, kernel: Kernel, ran: int, rebind: bool) -> bool:
        """Restore the references after cell `ran` (recording the names an instructor's cell
        defined, resetting them before a test); False if it found tampering or the kernel died."""
        cell = self.cells[ran]
        record = [] if cell.kind == "solution" else sorted(bound_names(cell.source) - self.theirs)
        check = kernel.guard(record, rebind)
        if check.status == "died":
            self.outcomes[ran] = check
        elif check.status != "ok":
            self.tampering = f"after {cell.label}: {check.message}"
        return check.status == "ok"


def grade_submission(submission: Submission, limits: Limits, uid: int | None) -> Result:
    assignment = submission.assignment
    result = Result(submission.student, assignment.name if assignment else "", submission.path,
                    assignment.exercises if assignment else {})
    result.scores = dict.fromkeys(result.exercises, 0.0)
    if assignment is None:
        result.notes.append(f"cannot tell which assignment {submission.path.name} is: name it "
                            "like the solution notebook")
        return result
    try:
        theirs = student_cells(submission.data)
    except ValueError as e:
        result.notes.append(str(e))
        return result
    if not set(assignment.solution_ids) & theirs.keys():
        found = f"its cells are {', '.join(sorted(theirs)[:6])}" if theirs else "no grade_ids"
        result.notes.append(f"none of the exercise cells of {assignment.name} ({found}): "
                            "wrong notebook?")
        return result
    run = NotebookRun(assignment, graded_sources(assignment, theirs, result), limits, uid)
    try:
        outcomes = run.run()
    except KernelError as e:
        result.notes.append(str(e))
        return result
    result.notes += run.notes
    if run.tampering:
        result.notes.append(f"tampering found {run.tampering}: all exercises score 0")
        return result
    for i, (cell, outcome) in enumerate(zip(assignment.cells, outcomes)):
        exercise = cell.exercise if cell.kind != "setup" else ""
        if cell.kind == "test" and outcome.status == "ok":
            result.scores[exercise] += cell.points
        elif outcome.status not in ("ok", "not run"):
            message = f"{cell.label}: {outcome.message}"[:MAX_MESSAGE_CHARS]
            result.messages.setdefault(exercise, []).append(message)
            if i not in run.skipped and (cell.kind == "solution" or outcome.status == "timeout"):
                result.notes.append(message)
    not_run = [cell for cell, outcome in zip(assignment.cells, outcomes)
               if outcome.status == "not run"]
    if not_run:
        result.notes.append(f"the notebook's time limit ({limits.notebook_seconds:g} s) was used "
                            f"up; {len(not_run)} cells did not run")
        for cell in not_run:
            result.messages.setdefault(cell.exercise if cell.kind != "setup" else "", []).append(
                f"{cell.label}: did not run (the notebook's time limit was used up)")
    result.notes = list(dict.fromkeys(result.notes))
    return result


def grade(paths: list[Path], solutions: Path, out: Path, jobs: int = 1,
          limits: Limits = Limits()) -> list[Result]:
    """Grade every submission under `paths`; write out/gradebook.csv and out/feedback/*.md."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    assignments = load_assignments(solutions)
    submissions = find_submissions(paths, assignments)
    if not submissions:
        raise ValueError(f"no notebooks (.ipynb) in {', '.join(map(str, paths))}")
    if sys.platform != "linux" or platform.machine() not in grading_runtime.SYSCALLS:
        raise ValueError("bertlab grade confines student code with Linux resource limits and a "
                         "seccomp filter (x86_64 or aarch64): grade on Linux, e.g. in a container")
    users = [sandbox_user(slot) for slot in range(jobs)]
    if None in users and not grading_runtime.landlock_abi():
        fix = (f"make {sys.executable} usable by other users" if os.geteuid() == 0
               else "grade as root (in a container)")
        print("warning: this Linux has no Landlock and the kernels run as your user, so student "
              "code could change your files (not the grades: every notebook is read before any "
              f"kernel starts); grade on Linux 5.13 or later, or {fix} to give each kernel a user "
              "of its own", file=sys.stderr)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)
    done = iter(range(1, len(submissions) + 1))

    def work(submission: Submission) -> Result:
        slot = slots.get()
        started = time.monotonic()
        try:
            result = grade_submission(submission, limits, users[slot])
        finally:
            slots.put(slot)
        notes = f" ({'; '.join(result.notes)})" if result.notes else ""
        print(f"[{next(done)}/{len(submissions)}] {result.student} {result.assignment}: "
              f"{result.total:g}/{result.max:g} in {time.monotonic() - started:.0f} s{notes}",
              file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(work, submissions))
    results.sort(key=lambda r: (r.student, r.assignment, str(r.path)))
    write_gradebook(results, out / "gradebook.csv")
    write_feedback(results, out / "feedback")
    return results


# ----------------------------------------------------------------------------- reports


def write_gradebook(results: list[Result], path: Path) -> None:
    """One row per student and assignment; one column per exercise (blank where not part of it)."""
    exercises = list(dict.fromkeys(e for r in results for e in r.exercises))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "assignment", *exercises, "total", "max", "notes"])
        for r in results:
            scores = [f"{r.scores[e]:g}" if e in r.scores else "" for e in exercises]
            writer.writerow([r.student, r.assignment, *scores, f"{r.total:g}", f"{r.max:g}",
                             "; ".join(r.notes)])


def write_feedback(results: list[Result], folder: Path) -> None:
    """A markdown file per student: each assignment's score, and what failed and why."""
    folder.mkdir(parents=True, exist_ok=True)
    by_student: dict[str, list[Result]] = {}
    for r in results:
        by_student.setdefault(r.student, []).append(r)
    for student, rs in by_student.items():
        lines = [f"# Feedback for {student}", ""]
        for r in rs:
            lines += [f"## {r.assignment or r.path.name}: {r.total:g} / {r.max:g}", ""]
            lines += [f"- {note}" for note in r.notes] + ([""] if r.notes else [])
            for exercise, points in r.exercises.items():
                verdict = "passed" if r.scores[exercise] == points else "failed"
                lines.append(f"- **{exercise}**: {r.scores[exercise]:g} / {points:g}, {verdict}")
                lines += [f"    - {m}" for m in r.messages.get(exercise, [])]
            lines.append("")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in student)
        (folder / f"{safe}.md").write_text("\n".join(lines), encoding="utf-8")
