"""bertlab grade's sandbox and intake: every escape fails, every file gets a row.

One grading run (two kernels at once) covers a submission for each class of escape
(tests/fixtures/grading/escapes.py) and each kind of file intake must not lose, while the test
listens on loopback, tries to reach the sandbox's server, and watches every file outside the
sandbox. Another kills the grader half-way and runs it again.
"""

import csv
import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bertlab.course.grading import Limits, SandboxError, grade, sandbox

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
sys.path.insert(0, str(FIXTURES))
import escapes  # noqa: E402
import hostile  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux" or not os.path.exists("/usr/bin/bwrap"),
                                reason="the sandbox needs Linux and bubblewrap")
LIMITS = Limits(cell_seconds=20, notebook_seconds=90, memory_mb=3000, disk_mb=64)
GRADING = Path(sandbox.__file__).resolve().parent  # (others may edit the rest of the checkout)
PYTHON = Path(sys.executable).resolve()


def become_subreaper() -> None:
    """Orphans of this process's descendants become its children: none can hide from
    `living_children`."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def living_children() -> list[str]:
    """This process's children that are not zombies, by command line."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
            except OSError:
                pass
    return found


def snapshot(*roots: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Contents, mode, owner and times (but access) of every file and folder under `roots`."""
    state = {}
    for root in roots:
        walk = os.walk(root) if root.is_dir() else [(str(root.parent), [], [root.name])]
        for folder, dirs, files in walk:
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in [".", *files]:
                path = Path(folder, name)
                if skip and (path == skip or skip in path.parents):
                    continue
                st = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
                state[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                    st.st_ctime_ns, digest)
    return state


class Listener:
    """A TCP and a UDP socket on loopback, recording whatever reaches them."""

    def __init__(self):
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.received: list[bytes] = []
        for target in (self.accept, self.receive):
            threading.Thread(target=target, daemon=True).start()

    def accept(self):
        while True:
            connection, _ = self.tcp.accept()
            self.received.append(connection.recv(1024) or b"(connected)")

    def receive(self):
        while True:
            self.received.append(self.udp.recv(1024))


def reach(port: int, stop: threading.Event, reached: list[int]) -> None:
    """Keep trying to connect to `port` on loopback until `stop`."""
    while not stop.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            reached.append(port)
        except OSError:
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(out: Path) -> list[dict]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def escape_run(tmp_path_factory):
    become_subreaper()
    root = tmp_path_factory.mktemp("sandbox")
    solutions, submissions, out = root / "solutions", root / "submissions", root / "grades"
    solutions.mkdir()
    (solutions / "toy.ipynb").write_bytes((FIXTURES / "solutions" / "toy.ipynb").read_bytes())
    for student, data in {"perfect": hostile.PERFECT, "x y": hostile.PERFECT,
                          "x_y": hostile.PERFECT, "v3": escapes.nbformat3(hostile.PERFECT),
                          "utf16": hostile.PERFECT.decode().encode("utf-16"),
                          "twice": hostile.PERFECT}.items():
        (submissions / student).mkdir(parents=True)
        (submissions / student / "toy.ipynb").write_bytes(data)
    (submissions / "late" / "twice").mkdir(parents=True)
    (submissions / "late" / "twice" / "toy.ipynb").write_bytes(hostile.notebook(hostile.TOY))
    (submissions / "symlink").mkdir()
    (submissions / "symlink" / "toy.ipynb").symlink_to(solutions / "toy.ipynb")
    (submissions / "fifo").mkdir()
    os.mkfifo(submissions / "fifo" / "toy.ipynb")
    out.mkdir()
    targets = [str(solutions / "toy.ipynb"), str(submissions / "perfect" / "toy.ipynb"),
               str(out)]
    listener, server_port = Listener(), free_port()
    for student, data in escapes.submissions(targets, listener.port, server_port).items():
        (submissions / student).mkdir()
        (submissions / student / "toy.ipynb").write_bytes(data)
    before = snapshot(root, GRADING, PYTHON, skip=out)
    out_before = snapshot(out)
    stop, reached = threading.Event(), []
    threading.Thread(target=reach, args=(server_port, stop, reached), daemon=True).start()
    os.environ[escapes.SECRET_VARIABLE] = "the grader's secret"
    try:
        results = grade([submissions], solutions, out, jobs=2, limits=LIMITS)
    finally:
        del os.environ[escapes.SECRET_VARIABLE]
        stop.set()
    return {"root": root, "out": out, "results": results, "received": listener.received,
            "reached": reached, "before": before, "out_before": out_before,
            "after": snapshot(root, GRADING, PYTHON, skip=out), "children": living_children()}


ESCAPES = ["read_solution", "grader_environment", "network", "metadata", "disk", "kill_grader",
           "other_kernel", "uid"]


@pytest.mark.parametrize("student", ESCAPES + ["perfect"])
def test_every_escape_fails_and_scores_exactly_full_marks(escape_run, student):
    row, = [r for r in rows(escape_run["out"]) if r["student"] == student]
    assert (row["double"], row["softmax"], row["answer"], row["total"]) == ("1", "2", "1", "4"), \
        row["notes"]
    assert row["notes"] == ""


def test_nothing_reached_the_loopback_listener_or_the_sandboxs_server(escape_run):
    assert escape_run["received"] == [] and escape_run["reached"] == []


def test_no_file_outside_the_sandbox_changed(escape_run):
    assert escape_run["after"] == escape_run["before"]
    out_now = snapshot(escape_run["out"])[str(escape_run["out"] / ".")]
    assert out_now[:3] == escape_run["out_before"][str(escape_run["out"] / ".")][:3]


def test_no_process_is_left_alive(escape_run):
    assert escape_run["children"] == []


@pytest.mark.parametrize("student, total, note", [
    ("symlink", "0", "toy.ipynb is a symbolic link (to "),
    ("fifo", "0", "toy.ipynb is not a regular file"),
    ("utf16", "0", "not UTF-8 text (byte 0xff at position 0)"),
    ("v3", "4", ""),
    ("x y", "4", ""),
    ("x_y", "4", ""),
])
def test_intake_gives_every_file_a_row(escape_run, student, total, note):
    row, = [r for r in rows(escape_run["out"]) if r["student"] == student]
    assert row["total"] == total
    assert note in row["notes"] if note else row["notes"] == ""


def test_two_files_of_one_student_are_both_graded_with_a_note(escape_run):
    twice = sorted((r["file"], r["total"], r["notes"]) for r in rows(escape_run["out"])
                   if r["student"] == "twice")
    assert [(Path(f).parent.parent.name, total) for f, total, _ in twice] == [
        ("late", "0"), ("submissions", "4")]
    assert all(notes.startswith("2 files of 'twice' for toy: ") for _, _, notes in twice)


def test_feedback_files_are_unique_per_student(escape_run):
    feedback = escape_run["out"] / "feedback"
    assert (feedback / "x_y.md").read_text().startswith("# Feedback for x_y\n")
    spaced, = feedback.glob("x_y~*.md")
    assert spaced.read_text().startswith("# Feedback for x y\n")


def test_logs_keep_each_executed_notebook_and_kernel_log(escape_run):
    logs = escape_run["out"] / "logs" / "network"
    notebook, = logs.glob("toy-*.ipynb")
    assert "escaped: []" in notebook.read_text()
    log, = logs.glob("toy-*.log")
    assert log.exists()


def test_grading_without_bubblewrap_stops_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError, match="install the package `bubblewrap`"):
        grade([tmp_path], FIXTURES / "solutions" / "toy.ipynb", tmp_path / "out")


GRADE = """import sys
from pathlib import Path
from bertlab.course.grading import Limits, grade
grade([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), limits=Limits(cell_seconds=30))
"""


def test_a_killed_grader_keeps_its_rows_leaves_nothing_running_and_resumes(tmp_path):
    become_subreaper()
    submissions, out = tmp_path / "submissions", tmp_path / "out"
    slow = hostile.but(answer="import time\ntime.sleep(20)\nanswer = 16")
    for student, data in {"a_first": hostile.PERFECT, "b_slow": slow,
                          "c_last": hostile.PERFECT}.items():
        (submissions / student).mkdir(parents=True)
        (submissions / student / "toy.ipynb").write_bytes(data)
    solution = FIXTURES / "solutions" / "toy.ipynb"
    grader = subprocess.Popen([sys.executable, "-c", GRADE, submissions, solution, out],
                              stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "gradebook.csv").exists() or len(rows(out)) < 1:
        assert time.monotonic() < deadline and grader.poll() is None
        time.sleep(0.2)
    time.sleep(3)  # b_slow's kernel is running now
    os.kill(grader.pid, signal.SIGKILL)
    grader.wait()
    time.sleep(1)
    assert living_children() == []
    assert [r["student"] for r in rows(out)] == ["a_first"]
    resumed = grade([submissions], solution, out, limits=Limits(cell_seconds=30))
    assert sorted(r.student for r in resumed) == ["b_slow", "c_last"]
    assert [(r["student"], r["total"]) for r in rows(out)] == [
        ("a_first", "4"), ("b_slow", "4"), ("c_last", "4")]
    (submissions / "c_last" / "toy.ipynb").write_bytes(hostile.notebook(hostile.TOY))
    regraded = grade([submissions / "c_last"], solution, out, sandbox=False, regrade=True)
    assert [r.student for r in regraded] == ["c_last"]
    assert [(r["student"], r["total"]) for r in rows(out)] == [
        ("a_first", "4"), ("b_slow", "4"), ("c_last", "0")]
    again = grade([submissions], solution, out, limits=Limits(cell_seconds=30))
    assert [r.student for r in again] == ["c_last"]  # graded without the sandbox: not the same
    assert living_children() == []
