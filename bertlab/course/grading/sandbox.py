"""The isolation boundary of `bertlab grade`: one bubblewrap sandbox per kernel.

A sandbox has its own user (uid 65534, no capabilities), PID, IPC, UTS, network and mount
namespaces. It sees read-only copies of exactly what a kernel needs (the system's libraries, this
Python and its packages, the bertlab package with its bundled data and models), one fresh tmpfs of
limited size as its home and working folder, and nothing else: no solutions, no other
submissions, no grader files, no network (not even the host's loopback). It dies with the grader
(SIGKILL as soon as its parent goes), cannot see or signal any process outside, and everything it
started goes with it when it is closed.

The grader talks to the kernel through ZeroMQ over Unix sockets that the kernel creates in its own
tmpfs; the grader reaches them through /proc/PID/root (its view of the sandbox's files), connects
before any student code runs and never reconnects, so a kernel cannot redirect it elsewhere.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

HOME = "/home/student"  # the sandbox's one writable folder: home, working folder and TMPDIR
CONNECTION = "/run/kernel.json"
SOCKETS = f"{HOME}/.kernel"  # the kernel's sockets, SOCKETS-1 ... SOCKETS-5
UID = 65534  # nobody
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache",
          "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
MAX_LOG_BYTES = 1 << 20  # of a kernel's stdout and stderr kept in OUT/logs


class SandboxError(RuntimeError):
    """bubblewrap is missing or cannot make a sandbox here."""


def bwrap() -> str:
    """The bubblewrap executable; SandboxError naming the package if there is none."""
    path = shutil.which("bwrap")
    if path is None or sys.platform != "linux":
        raise SandboxError("bertlab grade runs each notebook in a bubblewrap sandbox: install "
                           "the package `bubblewrap` (apt-get install bubblewrap) on Linux, or "
                           "pass --no-sandbox for notebooks you trust")
    return path


def package_folder() -> Path:
    import bertlab

    return Path(bertlab.__file__).resolve().parent


def readable_paths() -> list[str]:
    """What a kernel reads: this Python (its base and its environment) and the bertlab package,
    with the data and models it finds beside itself when installed from a checkout."""
    package = package_folder()
    paths = {sys.base_prefix, sys.prefix, str(package)}
    paths |= {str(package.parent / name) for name in ("data", "models")
              if (package.parent / name / ".").is_dir() and package.parent != Path(sys.prefix)}
    return sorted(paths)


def stubbed_package(names: set[str], folder: Path) -> list[str]:
    """Copy the bertlab package into `folder` with every function called one of `names` (what an
    exercise asks students to write) replaced by one that says it is not available; returns the
    functions replaced. The sandbox of a student's kernel sees this copy instead of the package."""
    shutil.copytree(package_folder(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    replaced = []
    for path in sorted(folder.rglob("*.py")):
        if "course" in path.relative_to(folder).parts:
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        functions = [node for node in ast.walk(ast.parse("\n".join(lines)))
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.name in names]
        for node in sorted(functions, key=lambda n: n.lineno, reverse=True):
            body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 \
                else node.body
            if body is node.body and ast.get_docstring(node) is not None:
                body = []  # a docstring alone: append the stub after it
            start = body[0].lineno - 1 if body else node.end_lineno
            indent = " " * (node.body[0].col_offset)
            module = ".".join(path.relative_to(folder.parent).with_suffix("").parts)
            lines[start:node.end_lineno] = [
                f"{indent}raise RuntimeError(\"{module}.{node.name} is not available while "
                "grading: the exercise asks you to write it yourself\")"]
            replaced.append(f"{module}.{node.name}")
        path.write_text("\n".join(lines), encoding="utf-8")
    return sorted(set(replaced))


CHECKS_STUB = '''"""bertlab's checks are not available while grading (hidden tests grade it)."""


def summary(chapter=None):
    print("(the checks do not run while grading: see your feedback)")


def __getattr__(name):
    raise AttributeError(f"checks.{name} is not available while grading: the checks and their "
                         "reference implementations are not in the grading sandbox")
'''


def checks_folder() -> str:
    from .. import checks

    return str(Path(checks.__file__).resolve().parent)


def command(argv: list[str], env: dict[str, str], disk_mb: int, fds: dict[str, int],
            package: Path | None = None) -> list[str]:
    """The bwrap command line that runs `argv` in a fresh sandbox; `fds` are pipes of the
    connection file and, if the checks are hidden, of their stub; `package` a copy of bertlab
    to see in place of the package (see stubbed_package)."""
    args = [bwrap(), "--unshare-all", "--die-with-parent", "--new-session", "--uid", str(UID),
            "--gid", str(UID), "--hostname", "grading", "--cap-drop", "ALL"]
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in readable_paths():
        args += ["--ro-bind", path, path]
    if package is not None:
        args += ["--ro-bind", str(package), str(package_folder())]
    if "checks" in fds:  # the checks (and their references) replaced by a stub
        folder = checks_folder()
        args += ["--tmpfs", folder, "--ro-bind-data", str(fds["checks"]), f"{folder}/__init__.py",
                 "--remount-ro", folder]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(disk_mb << 20), "--tmpfs", HOME,
             "--ro-bind-data", str(fds["connection"]), CONNECTION, "--chdir", HOME, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *argv]


def pipe(text: str) -> int:
    """The reading end of a pipe holding `text` (small: it fits in the pipe's buffer)."""
    read, write = os.pipe()
    with os.fdopen(write, "w") as f:
        f.write(text)
    return read


class Sandbox:
    """A process tree in a bubblewrap sandbox; its stdout and stderr go to `log` (capped).
    With `hide_checks`, bertlab's checks are a stub there."""

    def __init__(self, argv: list[str], env: dict[str, str], disk_mb: int, connection: dict,
                 log: Path, hide_checks: bool = False, package: Path | None = None):
        fds = {"connection": pipe(json.dumps(connection))}
        if hide_checks:
            fds["checks"] = pipe(CHECKS_STUB)
        status_read, status_write = os.pipe()
        argv = command(argv, env, disk_mb, fds, package)
        argv[1:1] = ["--json-status-fd", str(status_write)]
        try:  # no environment: bwrap is the sandbox's PID 1, whose environ the kernel can read
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT,
                                            pass_fds=(*fds.values(), status_write), env={},
                                            start_new_session=True)
        finally:
            for fd in (*fds.values(), status_write):
                os.close(fd)
        self.status = os.fdopen(status_read, "rb")
        self.pid = self.child_pid()  # the sandbox's PID 1, seen from outside
        self.logger = threading.Thread(target=copy_capped, args=(self.process.stdout, log),
                                       daemon=True)
        self.logger.start()

    def child_pid(self) -> int | None:
        """bwrap's first status line names the sandbox's first process; None if it failed."""
        line = self.status.readline()
        try:
            return int(json.loads(line)["child-pid"])
        except (ValueError, KeyError):
            self.process.wait()
            return None

    def path(self, inside: str) -> str:
        """The name, outside, of the file `inside` within the sandbox."""
        return f"/proc/{self.pid}/root{inside}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def interrupt(self) -> None:
        """SIGINT to the sandbox's command (the child of its PID 1)."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            for pid in children:
                os.kill(int(pid), signal.SIGINT)
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        """Kill bwrap: the sandbox's PID 1 gets SIGKILL with it, and so does all that is left."""
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.logger.join(timeout=5)
        self.status.close()


def copy_capped(source, log: Path) -> None:
    """Copy `source` into `log` up to MAX_LOG_BYTES; read (and drop) the rest to its end."""
    kept = dropped = 0
    with open(log, "ab") as out:
        while chunk := source.read1(1 << 16):
            keep = chunk[: max(MAX_LOG_BYTES - kept, 0)]
            out.write(keep)
            kept, dropped = kept + len(keep), dropped + len(chunk) - len(keep)
        if dropped:
            out.write(f"\n[{dropped} more bytes not kept]\n".encode())
    source.close()
