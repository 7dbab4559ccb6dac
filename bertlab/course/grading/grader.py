"""`bertlab grade`: run each student's notebook in a sandboxed kernel and score it.

What runs. The grader assembles the notebook itself: the instructor's cells everywhere (setup,
visible checks, hidden tests), except that each solution cell is the student's cell with the same
nbgrader `grade_id` (or the exercise's stub, which raises, if the student has none). Every file
is read before the first kernel starts (see intake.py), and the gradebook is written by the
grader alone, row by row (reports.py).

Two kinds of verdict. A test of the course's own (a cell that calls `checks.X(...)`) never runs
in the student's kernel: the solution notebook runs once, in a kernel of its own, recording every
call its tests make of the solution's functions (inputs drawn from a seed of this run); each
student's kernel makes the same calls of the student's functions, and the grader compares the
outputs, as plain data, outside both (driver.py, verdicts.py). Whatever a submission does to its
own interpreter, it earns points only for outputs equal to the solution's, and it never sees the
hidden tests. Any other test cell (nbgrader's plain asserts) runs in the student's kernel and
earns its points if it runs without an exception, as the kernel's reply says (printed text is
never read); a tamper guard (kernel.py) puts back what a notebook replaced before each such test
and scores a notebook that tampered 0.

Each notebook gets a fresh kernel in a bubblewrap sandbox of its own (sandbox.py: its own user,
processes, network and files; one small writable folder; nothing of the instructor's; bertlab's
checks and its own versions of the functions the exercises ask for replaced by stubs), with
limits on memory, file size and disk, no way to start processes (kernel.py's seccomp filter), and
a time limit per cell and per notebook.

Failures cost only what they break. A cell that raises fails its exercise. A cell that runs past
its time limit is interrupted; if it cannot be interrupted, or if a cell kills the kernel
(`os._exit`, a crash), the kernel is restarted and the notebook is run again from the top without
that cell. When the notebook's time is used up, the cells left count as failed. An unreadable,
empty or foreign notebook gets a row of zeros. The `notes` column says why, for every row that
lost points to anything but a failing test.
"""

from __future__ import annotations

import ast
import hashlib
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

from ... import __version__
from ..authoring import HIDDEN_TESTS, marked_regions, python_source
from . import kernel
from .intake import (
    Assignment,
    Submission,
    bound_names,
    cell_ast,
    find_submissions,
    imported_modules,
    load_assignments,
    student_cells,
)
from .kernel import Limits
from .manual import apply_manual_scores, read_manual_scores
from .reports import Reports, Result, safe_name
from .sandbox import CONNECTION, HOME, SOCKETS, Sandbox, bwrap, stubbed_package
from .verdicts import cases, unchecked, verdicts

MAX_REPLY_BYTES = 4 << 20  # a bigger message ends the connection: the kernel counts as dead
MAX_RECORDING_BYTES = 1 << 30  # of the calls the solution's tests make (inputs are big models)
MAX_OUTPUT_BYTES = 1 << 20  # of one cell's outputs kept in the executed notebook
MAX_MESSAGE_CHARS = 500  # of an error message in the feedback
GUARD_SECONDS = 30
INTERRUPT_SECONDS = 3  # how long an interrupted cell gets to stop before the kernel is killed
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in the kernel's tracebacks
RUNTIME = "__import__('bertlab.course.grading.kernel', fromlist=['start'])"
SENT = ("name", "answer", "inputs", "tapes", "forbidden")  # of a recorded call, to the student
DRIVER = "__import__('bertlab.course.grading.driver', fromlist=['replay'])"
PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


# ----------------------------------------------------------------------------- the kernel


@dataclass
class Outcome:
    """What became of one cell."""

    status: str  # "ok", "error", "timeout", "died" or "not run"
    message: str = ""
    answers: dict = field(default_factory=dict)  # the kernel's answers to user expressions
    outputs: list = field(default_factory=list)  # nbformat outputs, capped
    cases: tuple[int, int] | None = None  # (passed, of): a test decided outside the kernel

    @property
    def fraction(self) -> float:
        """The share of a test's points this outcome earns."""
        if self.status == "ok":
            return 1.0
        return self.cases[0] / self.cases[1] if self.cases and self.cases[1] else 0.0


class KernelError(RuntimeError):
    """The grading kernel did not start."""


class Unsandboxed:
    """A kernel process in a temporary folder, for --no-sandbox: the same interface as
    Sandbox, with none of its confinement (limits and the no-fork filter still apply)."""

    def __init__(self, argv: list[str], env: dict[str, str], disk_mb: int, connection: dict,
                 log: Path, hide_checks: bool = False, package: Path | None = None):
        self.home = tempfile.mkdtemp(prefix="bertlab-grade-")
        Path(self.path(CONNECTION)).parent.mkdir(parents=True)
        Path(self.path(CONNECTION)).write_text(json.dumps(
            {**connection, "ip": self.path(connection["ip"])}))
        argv = [self.path(a) if a == CONNECTION else a for a in argv]
        env = {k: v.replace(HOME, self.home) for k, v in env.items()}
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, cwd=self.home, env=env,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def path(self, inside: str) -> str:
        return self.home + inside.removeprefix(HOME) if inside.startswith(
            HOME) else f"{self.home}/.run{inside}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        """The kernel is a single process: the launcher's seccomp filter forbids it to fork."""
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


class Kernel:
    """An ipykernel in a sandbox of its own, with resource limits, reached over Unix sockets."""

    def __init__(self, limits: Limits, log: Path, isolate: bool = True, student: bool = True,
                 package: Path | None = None):
        """`student`: a student's kernel (the checks hidden), not the solution's; `package`: the
        copy of bertlab it sees (see sandbox.stubbed_package)."""
        self.limits, self.secret = limits, secrets.token_hex(16)  # signs the guard's answers
        connection = {**PORTS, "transport": "ipc", "ip": SOCKETS, "kernel_name": "",
                      "key": secrets.token_hex(32), "signature_scheme": "hmac-sha256"}
        argv = [sys.executable, kernel.__file__, "--memory-mb", str(limits.memory_mb),
                "--fsize-mb", str(limits.file_mb), "--", sys.executable, "-m",
                "ipykernel_launcher", "-f", CONNECTION, "--HistoryManager.enabled=False"]
        box = Sandbox if isolate else Unsandboxed
        self.box = box(argv, kernel_env(student), limits.disk_mb, connection, log,
                       hide_checks=student, package=package)
        if self.box.pid is None:
            raise KernelError(f"bubblewrap could not make the sandbox: {log.read_text()[-500:]}")
        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES if student else MAX_RECORDING_BYTES)
        context.setsockopt(zmq.RECONNECT_IVL, -1)  # connect once, before any student code runs
        context.setsockopt(zmq.RCVHWM, 100)
        self.client = BlockingKernelClient(context=context)
        self.client.load_connection_info({**connection, "ip": self.box.path(SOCKETS)})
        self.connect()

    def connect(self) -> None:
        """Wait for the kernel's sockets, connect, and wait until it answers on both channels."""
        deadline = time.monotonic() + self.limits.startup_seconds
        sockets = [self.box.path(f"{SOCKETS}-{port}") for port in PORTS.values()]
        while not all(map(os.path.exists, sockets)):
            if not self.box.alive() or time.monotonic() > deadline:
                raise KernelError("the grading kernel did not start")
            time.sleep(0.05)
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        while self.box.alive() and time.monotonic() < deadline:
            self.client.kernel_info()
            try:
                if self.client.get_shell_msg(timeout=1)["msg_type"] == "kernel_info_reply":
                    self.client.get_iopub_msg(timeout=0.2)
                    return
            except queue.Empty:
                continue
        raise KernelError("the grading kernel did not answer")

    def start(self, modules: list[str]) -> None:
        """Import `modules` and snapshot the references, before any student code runs (as a
        user expression, like every later check: see guard)."""
        expression = f"{RUNTIME}.start({self.secret!r}, {modules!r})"
        outcome = self.execute("", self.limits.startup_seconds, silent=True,
                               expressions={"start": expression})
        answer = outcome.answers.get("start", {})
        if answer.get("status") != "ok":
            problem = outcome.message or f"{answer.get('ename')}: {answer.get('evalue')}"
            raise KernelError(f"the grading kernel did not start ({outcome.status}: {problem})")

    def alive(self) -> bool:
        return self.box.alive()

    def guard(self, record: list[str], rebind: bool) -> Outcome:
        """Call the kernel's guard (see kernel.after_cell); "ok" only if it answered."""
        nonce = secrets.token_hex(16)
        expression = f"{RUNTIME}.after_cell({record!r}, {rebind}, {nonce!r})"
        outcome = self.execute("", GUARD_SECONDS, silent=True, expressions={"guard": expression})
        if outcome.status != "ok":
            return outcome
        answer = outcome.answers.get("guard", {})
        if answer.get("status") == "error":
            return Outcome("error", answer["evalue"] if answer.get("ename") == "Tampering"
                           else error_message(answer))
        if answer.get("data", {}).get("text/plain") != repr(kernel.sign(
                self.secret.encode(), nonce)):
            return Outcome("error", "the kernel answered for the grader's check without running it")
        return Outcome("ok")

    def evaluate(self, expression: str, seconds: float) -> tuple[Outcome, str | None]:
        """Evaluate an expression whose value is a string; (outcome, the string or None)."""
        outcome = self.execute("", seconds, silent=True, expressions={"value": expression})
        answer = outcome.answers.get("value", {})
        if outcome.status != "ok":
            return outcome, None
        if answer.get("status") != "ok":
            return Outcome("error", error_message(answer)), None
        try:
            return outcome, str(ast.literal_eval(answer["data"]["text/plain"]))
        except Exception:  # whatever a kernel answers that is not a string literal
            return Outcome("error", "the kernel gave no answer"), None

    def replay(self, calls: list[dict], seconds: float) -> Outcome:
        """Make the recorded `calls` of the student's functions; "ok" if every output (and
        input afterwards) equals the solution's, decided here, outside the kernel; otherwise
        an error naming the first case that failed, with the count of those that passed. The
        kernel gets each call's inputs, never the solution's outputs."""
        sent = [{k: call[k] for k in SENT if k in call} for call in calls]
        outcome, answers = self.evaluate(f"{DRIVER}.replay({json.dumps(sent)!r})", seconds)
        if answers is None:
            return outcome
        problems = verdicts(calls, answers)
        failed = [p for p in problems if p]
        cases = (len(problems) - len(failed), len(problems))
        if not failed:
            return Outcome("ok", cases=cases)
        count = f" ({cases[0]} of {cases[1]} cases passed)" if cases[1] > 1 else ""
        return Outcome("error", failed[0] + count, cases=cases)

    def execute(self, code: str, seconds: float, silent: bool = False,
                expressions: dict[str, str] | None = None) -> Outcome:
        """Run `code`; past `seconds`, interrupt it, and kill the kernel if that does not work.
        A successful outcome carries the kernel's answers to the user `expressions`."""
        msg_id = self.client.execute(code, silent=silent, store_history=not silent,
                                     user_expressions=expressions or {}, allow_stdin=False,
                                     stop_on_error=False)
        outputs = Outputs(msg_id)
        reply = self.reply(msg_id, seconds, outputs)
        if reply is None and self.alive():
            self.box.interrupt()
            if self.reply(msg_id, INTERRUPT_SECONDS, outputs) is None:
                self.kill()
            return Outcome("timeout", f"still running after the time limit of {seconds:.0f} s",
                           outputs=outputs.kept)
        if reply is None:
            code = self.box.process.returncode
            return Outcome("died", f"the kernel died (exit code {code})", outputs=outputs.kept)
        self.drain(outputs)
        content = reply["content"]
        if content["status"] == "ok":
            return Outcome("ok", answers=content.get("user_expressions", {}),
                           outputs=outputs.kept)
        return Outcome("error", error_message(content), outputs=outputs.kept)

    def reply(self, msg_id: str, seconds: float, outputs: Outputs) -> dict | None:
        """The reply to request `msg_id`, or None if none came in time or the kernel died;
        the request's outputs go to `outputs` meanwhile."""
        deadline = time.monotonic() + seconds
        while self.alive() and (left := deadline - time.monotonic()) > 0:
            self.drain(outputs, wait=False)
            try:
                message = self.client.get_shell_msg(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") == msg_id:
                return message
        return None

    def drain(self, outputs: Outputs, wait: bool = True) -> None:
        """Take the outputs that have come; with `wait`, until the kernel is idle (1 s at most)."""
        deadline = time.monotonic() + (1 if wait else 0)
        while not outputs.idle:
            try:
                outputs.add(self.client.get_iopub_msg(
                    timeout=max(deadline - time.monotonic(), 0) or 0.001))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return

    def kill(self) -> None:
        self.box.kill()

    def close(self) -> None:
        self.client.stop_channels()
        self.client.context.destroy(linger=0)
        self.kill()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Outputs:
    """A cell's outputs as nbformat dicts, up to MAX_OUTPUT_BYTES."""

    def __init__(self, msg_id: str):
        self.msg_id, self.kept, self.size, self.idle = msg_id, [], 0, False

    def add(self, message: dict) -> None:
        if message["parent_header"].get("msg_id") != self.msg_id:
            return
        kind, content = message["msg_type"], message["content"]
        if kind == "status":
            self.idle = content.get("execution_state") == "idle"
            return
        if kind not in ("stream", "display_data", "execute_result", "error"):
            return
        output = {"output_type": kind, **{k: v for k, v in content.items() if k != "transient"}}
        if kind in ("display_data", "execute_result"):
            output.setdefault("metadata", {})
        size = len(json.dumps(output))
        if self.size + size > MAX_OUTPUT_BYTES:
            if self.size <= MAX_OUTPUT_BYTES:
                self.kept.append({"output_type": "stream", "name": "stderr",
                                  "text": "[bertlab grade: the rest of the output was not kept]"})
            self.size = MAX_OUTPUT_BYTES + 1
            return
        self.kept.append(output)
        self.size += size


def error_message(content: dict) -> str:
    """"ename: evalue" of an error reply; for a bare `assert`, the line that failed."""
    message = f"{content.get('ename', '')}: {content.get('evalue', '')}".strip(": ")
    if content.get("evalue"):
        return message
    lines = ANSI.sub("", "\n".join(content.get("traceback", []))).splitlines()
    failed = [line.split("---->", 1)[1].strip() for line in lines if "---->" in line]
    return f"{message} in `{failed[-1].split(' ', 1)[-1]}`" if failed else message or "error"


BARE_ASSERT = re.compile(r"AssertionError in `(assert .*)`")


def explained(source: str, outcome: Outcome, kernel: Kernel) -> str:
    """An assert without a message, failed, in words: which case of the (hidden) tests, what it
    expected and, for `assert x == y`, what x was."""
    found = BARE_ASSERT.fullmatch(outcome.message) if outcome.status == "error" else None
    lines = python_source(source).split("\n")
    asserts = sorted((n for n in ast.walk(cell_ast(source)) if isinstance(n, ast.Assert)),
                     key=lambda n: n.lineno)
    failed = [k for k, n in enumerate(asserts) if found and lines[n.lineno - 1].strip()
              == found[1].strip()]
    if not failed:
        return outcome.message
    node, hidden = asserts[failed[0]], marked_regions(lines, HIDDEN_TESTS, "")
    where = "hidden tests" if any(b < node.lineno - 1 < e for b, e in hidden) else "tests"
    case = f"case {failed[0] + 1} of the {where}"
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0],
                                                                               ast.Eq)):
        return f"{case}: expected `{ast.unparse(test)}` to be true, and it is not"
    left, right = ast.unparse(test.left), ast.unparse(test.comparators[0])
    _, got = kernel.evaluate(f"repr({left})[:200]", GUARD_SECONDS)
    return f"{case}: expected `{left}` to be `{right}`, got {got if got is not None else '?'}"


def kernel_env(student: bool = True) -> dict[str, str]:
    """A small, known environment: none of the instructor's variables reach the student's code.
    In the solution's kernel a failed check raises (a solution that fails its own check is an
    error to fix, never a recording)."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}",
           "HOME": HOME, "TMPDIR": HOME, "USER": "student", "LOGNAME": "student",
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONHASHSEED": "0",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if "BERTLAB_SCALE" in os.environ:
        env["BERTLAB_SCALE"] = os.environ["BERTLAB_SCALE"]
    if not student:
        env["BERTLAB_CHECKS"] = "raise"
    return env


# ----------------------------------------------------------------------------- grading


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

    def __init__(self, assignment: Assignment, sources: list[str], limits: Limits, log: Path,
                 isolate: bool, recorded: dict[int, list[dict]], package: Path | None = None):
        """`recorded`: the calls of the tests decided outside the kernel, by cell index;
        `package`: the copy of bertlab the kernel sees."""
        self.cells, self.sources, self.recorded = assignment.cells, sources, recorded
        self.package = package
        self.limits, self.log, self.isolate = limits, log, isolate
        self.theirs = set(assignment.solution_names)
        self.modules = sorted(set().union(*(imported_modules(c.source) for c in self.cells
                                            if c.kind != "solution")))
        self.outcomes = [Outcome("not run")] * len(self.cells)
        self.skipped: set[int] = set()
        self.budget = limits.notebook_seconds
        self.notes: list[str] = []
        self.tampering = ""  # what the guard found, if anything
        # the guard matters only to tests whose verdict is the kernel's own
        self.guarded = any(c.kind == "test" and i not in recorded for i, c in enumerate(self.cells))

    def run(self) -> list[Outcome]:
        while True:
            with Kernel(self.limits, self.log, self.isolate, package=self.package) as kernel:
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
            started, seconds = time.monotonic(), min(self.limits.cell_seconds, self.budget)
            if i in self.recorded:  # the test's source never enters the student's kernel
                self.outcomes[i] = kernel.replay(self.recorded[i], seconds)
            else:
                self.outcomes[i] = kernel.execute(self.sources[i], seconds)
                if cell.kind == "test" and kernel.alive():
                    self.outcomes[i].message = explained(cell.source, self.outcomes[i], kernel)
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
        if not self.guarded:
            return self.alive_after(kernel, ran)
        cell = self.cells[ran]
        record = [] if cell.kind == "solution" else sorted(bound_names(cell.source) - self.theirs)
        check = kernel.guard(record, rebind)
        if check.status == "died":
            self.outcomes[ran] = check
        elif check.status != "ok":
            self.tampering = f"after {cell.label}: {check.message}"
        return check.status == "ok"

    def alive_after(self, kernel: Kernel, ran: int) -> bool:
        if not kernel.alive():
            self.outcomes[ran] = Outcome("died", "the kernel died")
        return kernel.alive()

    def notebook(self) -> nbformat.NotebookNode:
        """The graded notebook as it ran, with its outputs (for OUT/logs)."""
        nb = nbformat.v4.new_notebook()
        for cell, source, outcome in zip(self.cells, self.sources, self.outcomes):
            code = nbformat.v4.new_code_cell(source, outputs=list(map(nbformat.from_dict,
                                                                     outcome.outputs)))
            code.metadata["bertlab_grade"] = {"kind": cell.kind, "grade_id": cell.grade_id,
                                              "status": outcome.status}
            nb.cells.append(code)
        return nb


OUTSIDE = "your outputs compared with the solution's, outside your kernel"
INSIDE = "its test run in your kernel"


def record_solution(assignment: Assignment, limits: Limits, log: Path,
                    isolate: bool) -> dict[int, list[dict]]:
    """Run the solution notebook in a kernel of its own (the checks and references there) and
    record, for each test of the course's own, the calls it makes of the solution's functions,
    on torch's random numbers from a seed drawn now. A test whose inputs are not plain data
    stays in the student's kernel (a warning says so)."""
    names, seed, recorded, kinds = assignment.solution_names, secrets.randbelow(1 << 62), {}, {}
    with Kernel(limits, log, isolate, student=False) as kernel:
        for i, cell in enumerate(assignment.cells):
            if cell.calls_checks:
                kernel.execute(f"{DRIVER}.record({names!r}, {cell.check_arguments!r}); "
                               f"__import__('torch').manual_seed({seed})", GUARD_SECONDS,
                               silent=True)
            outcome = kernel.execute(cell.source, limits.cell_seconds)
            if outcome.status != "ok":
                raise ValueError(f"{assignment.name}: the solution fails {cell.label} "
                                 f"({outcome.message}): fix the solution notebook (see {log})")
            if not cell.calls_checks:
                continue
            _, calls = kernel.evaluate(f"{DRIVER}.recorded()", limits.cell_seconds)
            kernel.execute(f"{DRIVER}.unrecord({names!r})", GUARD_SECONDS, silent=True)
            calls = json.loads(calls or "[]")
            problems = [c["problem"] for c in calls if "problem" in c] or (
                [] if calls else ["it calls none of the exercise's functions"])
            if problems:
                print(f"warning: {assignment.name}: {cell.label} runs in the students' kernels: "
                      f"{problems[0]}", file=sys.stderr)
                continue
            recorded[i], kinds[cell.label], reply = calls, cases(calls), reply_bytes(calls)
            if reply > MAX_REPLY_BYTES:
                print(f"warning: {assignment.name}: {cell.label}'s calls return "
                      f"{reply / 2**20:.1f} MiB, more than the {MAX_REPLY_BYTES >> 20} MiB a "
                      "student's kernel may send back: every submission will fail it; give its "
                      "calls smaller inputs", file=sys.stderr)
            for case in unchecked(kinds[cell.label]):
                print(f"warning: {assignment.name}: {cell.label}'s hidden tests call {case}, "
                      "a kind of case its visible check never runs", file=sys.stderr)
    log.with_suffix(".cases.json").write_text(json.dumps(kinds, indent=1))
    return recorded


def reply_bytes(calls: list[dict]) -> int:
    """About what a student's kernel sends back for these calls: their outputs and inputs after."""
    return len(json.dumps([[c.get("output"), c.get("after")] for c in calls]))


def checksum(submission: Submission, limits: Limits, isolate: bool) -> str:
    """Of what decides a row: the file, its solution and manual scores, the limits, the sandbox
    and this grader's version. A row graded under other limits is graded again."""
    what = f"{submission.digest} {limits} {isolate} {__version__}"
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def label(submission: Submission) -> str:
    """The file name (without suffix) of a submission's logs."""
    name = submission.assignment.name if submission.assignment else submission.path.name
    return f"{safe_name(name)}-{hashlib.sha256(str(submission.path).encode()).hexdigest()[:8]}"


def grade_submission(submission: Submission, limits: Limits, logs: Path, isolate: bool = True,
                     recorded: dict[int, list[dict]] | None = None,
                     package: Path | None = None) -> Result:
    """Grade one submission; its executed notebook and kernel log go to `logs`. `recorded`: the
    calls of the solution's tests (see record_solution); `package`: the copy of bertlab its
    kernel sees, without the functions its exercises ask for (see sandbox.stubbed_package)."""
    assignment = submission.assignment
    result = Result(submission.student, assignment.name if assignment else "", submission.path,
                    assignment.exercises if assignment else {})
    result.scores = dict.fromkeys(result.exercises, 0.0)
    result.notes += [submission.note] if submission.note else []
    if submission.problem:
        result.notes.append(submission.problem)
        return result
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
    log = logs / f"{label(submission)}.log"
    log.unlink(missing_ok=True)
    run = NotebookRun(assignment, graded_sources(assignment, theirs, result), limits, log, isolate,
                      recorded or {}, package)
    try:
        outcomes = run.run()
    except KernelError as e:
        result.notes.append(f"{e}; see {log}")
        return result
    finally:
        nbformat.write(run.notebook(), logs / f"{label(submission)}.ipynb")
    result.checksum = checksum(submission, limits, isolate)
    score(result, run, outcomes, limits)
    apply_manual_scores(result, assignment.manual, submission.manual)
    return result


def score(result: Result, run: NotebookRun, outcomes: list[Outcome], limits: Limits) -> None:
    """The points of the tests that passed, and a message for every cell that failed."""
    result.notes += run.notes
    if run.tampering:
        result.notes.append(f"tampering found {run.tampering}: all exercises score 0")
        return
    for i, (cell, outcome) in enumerate(zip(run.cells, outcomes)):
        exercise = cell.exercise if cell.kind != "setup" else ""
        if cell.kind == "test":
            result.kinds[exercise] = OUTSIDE if i in run.recorded else INSIDE
        if cell.kind == "test":
            result.scores[exercise] += cell.points * outcome.fraction
            if outcome.cases:
                passed, of = result.cases.get(exercise, (0, 0))
                result.cases[exercise] = (passed + outcome.cases[0], of + outcome.cases[1])
        if outcome.status not in ("ok", "not run"):
            message = f"{cell.label}: {outcome.message}"[:MAX_MESSAGE_CHARS]
            result.messages.setdefault(exercise, []).append(message)
            if i not in run.skipped and (cell.kind == "solution" or outcome.status == "timeout"):
                result.notes.append(message)
    not_run = [cell for cell, outcome in zip(run.cells, outcomes) if outcome.status == "not run"]
    if not_run:
        result.notes.append(f"the notebook's time limit ({limits.notebook_seconds:g} s) was used "
                            f"up; {len(not_run)} cells did not run")
        for cell in not_run:
            result.messages.setdefault(cell.exercise if cell.kind != "setup" else "", []).append(
                f"{cell.label}: did not run (the notebook's time limit was used up)")
    result.notes = list(dict.fromkeys(result.notes))


def grade(paths: list[Path], solutions: Path, out: Path, jobs: int = 1,
          limits: Limits = Limits(), sandbox: bool = True, regrade: bool = False,
          manual_scores: Path | None = None) -> list[Result]:
    """Grade every submission under `paths` that `out` has no up-to-date row of (all of them
    with `regrade`); write each row to out/gradebook.csv, out/feedback/ and out/logs/ as soon
    as it is graded. `sandbox=False` runs the kernels unconfined: for notebooks you trust.
    `manual_scores`: a CSV of the points given by hand (see manual.py)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if sys.platform != "linux" or platform.machine() not in kernel.SYSCALLS:
        raise ValueError("bertlab grade confines student code with Linux namespaces, resource "
                         "limits and a seccomp filter (x86_64 or aarch64): grade on Linux, e.g. "
                         "in a container")
    if sandbox:
        bwrap()  # stops here, naming the package, if bubblewrap is missing
    started = time.monotonic()
    assignments = load_assignments(solutions)
    submissions = find_submissions(paths, assignments)
    if not submissions:
        raise ValueError(f"no notebooks (.ipynb) in {', '.join(map(str, paths))}")
    if manual_scores is not None:
        given = read_manual_scores(Path(manual_scores), assignments, submissions)
        for submission in submissions:
            submission.manual = given.get(submission.key[:2], {})
    reports = Reports(out, [e for a in assignments.values() for e in a.exercises])
    todo = [s for s in submissions
            if regrade or not reports.graded(s.key, checksum(s, limits, sandbox))]
    done = iter(range(1, len(todo) + 1))
    needed = {s.assignment.name: s.assignment for s in todo if s.assignment and any(
        c.calls_checks for c in s.assignment.cells)}

    def reference(assignment: Assignment) -> dict[int, list[dict]]:
        log = reports.out / "logs" / f"solution-{safe_name(assignment.name)}.log"
        log.unlink(missing_ok=True)
        return record_solution(assignment, limits, log, sandbox)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        recordings = dict(zip(needed, pool.map(reference, needed.values())))
    packages = tempfile.TemporaryDirectory(prefix="bertlab-grade-")
    stubbed = {a.name: Path(packages.name, a.name, "bertlab") for a in assignments.values()}
    for assignment in assignments.values():
        stubbed_package(set(assignment.solution_names), stubbed[assignment.name])

    def work(submission: Submission) -> Result:
        began = time.monotonic()
        name = submission.assignment.name if submission.assignment else ""
        try:
            result = grade_submission(submission, limits, reports.logs(submission.student),
                                      sandbox, recordings.get(name), stubbed.get(name))
        except Exception as e:  # a bug of the grader's own: still a row, saying so
            result = Result(*submission.key[:2], submission.path, {}, notes=[
                f"the grader failed: {type(e).__name__}: {e}"])
        result.seconds = time.monotonic() - began
        reports.add(result, label(submission))
        notes = f" ({'; '.join(result.notes)})" if result.notes else ""
        print(f"[{next(done)}/{len(todo)}] {result.student} {result.assignment}: "
              f"{result.total:g}/{result.max:g} in {result.seconds:.0f} s{notes}",
              file=sys.stderr, flush=True)
        return result

    with packages, ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(work, todo))
    errors = sum(r.error for r in results)
    kept = len(submissions) - len(todo)
    print(f"graded {len(results) - errors} notebooks, {errors} could not be graded"
          f"{f', {kept} already graded' if kept else ''}, in {time.monotonic() - started:.0f} s: "
          f"{reports.gradebook}", file=sys.stderr, flush=True)
    return results
