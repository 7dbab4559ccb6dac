"""The grading kernel's side of `bertlab grade`: resource limits, and a guard against tampering.

Run as a script, this file is the kernel launcher (Linux), started inside the submission's sandbox
(see sandbox.py, which confines files, processes, users and the network): it limits its address
space and file sizes and forbids itself to start processes (a seccomp filter: threads yes, fork no,
so a fork bomb stops at its first fork), then becomes the kernel (`os.execv`), which inherits all
of it:

    python kernel.py --memory-mb 4096 --fsize-mb 256 -- \
        python -m ipykernel_launcher -f kernel.json

Imported in the kernel (the grader's first cell calls `start()`, before any student code), it
snapshots the reference code that tests run in the student's kernel rely on (nbgrader's plain
assert cells; the course's own tests are decided outside it, see verdicts.py): torch, builtins,
every `bertlab` module, and the IPython shell and kernel that report each cell's status. After
every cell the grader calls `after_cell()`, which puts back anything that was replaced and
raises `Tampering` naming it, so the next test runs against pristine references and the grader
learns (from the reply, not from printed text) that the notebook tampered. It is called as a
user expression, evaluated even when a notebook has replaced the shell's `run_cell`, and its
answer is signed with a secret given before any student code ran.

This is a guard, not a sandbox: code written against the guard itself could still fool it from
inside the process. The sandbox is the grader's: a bubblewrap sandbox per notebook, resource
limits, verdicts read from the kernel's replies.
"""

from __future__ import annotations

import ctypes
import hmac
import importlib
import os
import platform
import resource
import sys
import types
from dataclasses import dataclass

WATCHED_MODULES = (
    "builtins", "math", "operator", "numpy", "numpy.testing",
    "torch", "torch.nn", "torch.nn.functional", "torch.testing",
    "IPython.core.interactiveshell", "ipykernel.ipkernel", "ipykernel.kernelbase",
    "ipykernel.zmqshell", "jupyter_client.session",
)


@dataclass(frozen=True)
class Limits:
    """What `bertlab grade` allows each notebook (the launcher below enforces memory and file
    size, the sandbox disk: the size of its one writable folder)."""

    cell_seconds: float = 120
    notebook_seconds: float = 900  # all cells together, reruns included
    startup_seconds: float = 180  # kernel start and the grader's imports: not the student's time
    memory_mb: int = 4096  # address space; importing torch in a kernel takes about 1.6 GB of it
    file_mb: int = 256
    disk_mb: int = 512


HIDDEN = "bertlab.course.checks"  # a stub in a student's kernel (see sandbox.py)
CACHED_LATER = {"__slotnames__"}  # class attributes Python adds on first use (copy, pickle)


class Tampering(Exception):
    """The notebook replaced code that grading relies on (it has been put back)."""


class Watched:
    """One object whose attributes must keep their identity: a module, class or instance."""

    def __init__(self, label: str, obj: object, attributes=vars, strict: bool = True):
        self.label, self.obj, self.attributes, self.strict = label, obj, attributes, strict
        self.snapshot = dict(attributes(obj))

    def restore(self) -> list[str]:
        """Put back replaced and deleted attributes (and, if strict, remove added ones)."""
        current, found = self.attributes(self.obj), []
        if self.reloaded(current):
            return self.accept_reload(current)
        for key, value in self.snapshot.items():
            now = current.get(key, Watched)
            if now is value or isinstance(now, types.MethodType) and now == value:
                continue  # a method bound anew to the same object (ipykernel's builtins.input)
            if is_dynamo_wrapper(now, value):
                self.snapshot[key] = now
                continue
            found.append(f"{self.label}.{key} replaced")
            setattr(self.obj, key, value)
        if self.strict:
            for key in current.keys() - self.snapshot.keys() - CACHED_LATER:
                found.append(f"{self.label}.{key} added")
                delattr(self.obj, key)
        return found

    def reloaded(self, current: dict) -> bool:
        """Did importlib.reload run this module again? It gets a new __spec__."""
        spec = self.snapshot.get("__spec__")
        return isinstance(self.obj, types.ModuleType) and current.get("__spec__") is not spec

    def accept_reload(self, current: dict) -> list[str]:
        """A reloaded module has new objects, but its functions' code must be what it was."""
        found = []
        for key, value in self.snapshot.items():
            if not same_code(current.get(key, Watched), value):
                found.append(f"{self.label}.{key} replaced")
                setattr(self.obj, key, value)
        self.snapshot = dict(current)
        return found


def same_code(new: object, old: object) -> bool:
    """Could `new` be `old` defined again from the same source (as importlib.reload does)?
    Functions, and the methods of classes, must have equal code; other values are not compared."""
    if new is old:
        return True
    if isinstance(old, types.FunctionType):
        return isinstance(new, types.FunctionType) and new.__code__ == old.__code__
    if isinstance(old, type):
        return isinstance(new, type) and all(same_code(vars(new).get(key), value)
                                             for key, value in vars(old).items()
                                             if isinstance(value, types.FunctionType))
    return True


def is_dynamo_wrapper(new: object, old: object) -> bool:
    """Is `new` torch's own wrapper of `old`? Importing torch._dynamo wraps torch.manual_seed."""
    return getattr(new, "__wrapped__", None) is old \
        and getattr(new, "__code__", None) is _state["dynamo_wrapper_code"]


def shadowing(obj: object) -> dict:
    """An instance's own attributes that hide its class's methods (`shell.run_cell = ...`)."""
    return {key: value for key, value in vars(obj).items()
            if callable(getattr(type(obj), key, None))}


def functions_of(namespace: dict, module_name: str) -> list[types.FunctionType]:
    """Python functions defined in a module: its own functions and its classes' methods."""
    found = []
    for value in namespace.values():
        if getattr(value, "__module__", None) != module_name:
            continue
        if isinstance(value, types.FunctionType):
            found.append(value)
        elif isinstance(value, type):
            for member in vars(value).values():
                member = getattr(member, "__func__", member)  # staticmethod, classmethod
                if isinstance(member, types.FunctionType):
                    found.append(member)
    return found


class Guard:
    """A snapshot of the reference code; `restore()` puts it back and says what had changed."""

    def __init__(self, shell, watch: set[str]):
        self.shell, self.user_ns = shell, shell.user_ns
        self.modules = {name: module for name, module in sys.modules.items()
                        if name in watch or name.split(".")[0] == "bertlab"}
        classes = [sys.modules["torch"].Tensor, sys.modules["torch"].nn.Module,
                   sys.modules["IPython.core.interactiveshell"].ExecutionResult]
        for obj in (shell, shell.kernel, shell.kernel.session):
            classes += [cls for cls in type(obj).__mro__ if cls.__module__.split(".")[0]
                        in ("IPython", "ipykernel", "jupyter_client")]
        for name, module in self.modules.items():
            if name.startswith("bertlab"):
                classes += [value for value in vars(module).values()
                            if isinstance(value, type) and value.__module__ == name]
        # modules gain attributes as their submodules load, so only replacements count there
        self.watched = [Watched(name, module, strict=False)
                        for name, module in self.modules.items()]
        self.watched += [Watched(f"{cls.__module__}.{cls.__qualname__}", cls)
                         for cls in dict.fromkeys(classes)]
        self.watched += [Watched(label, obj, shadowing) for label, obj in (
            ("the IPython shell", shell), ("the kernel", shell.kernel),
            ("the kernel's session", shell.kernel.session))]
        self.code = {f: (f.__code__, f.__defaults__, f.__kwdefaults__)
                     for f in self.bertlab_functions()}
        self.bindings: dict[str, object] = {}

    def bertlab_functions(self) -> list[types.FunctionType]:
        return [f for name, module in self.modules.items() if name.startswith("bertlab")
                for f in functions_of(vars(module), name)]

    def restore(self) -> list[str]:
        """Put every watched reference back; return what had been changed."""
        found = [change for watched in self.watched for change in watched.restore()]
        for f, (code, defaults, kwdefaults) in self.code.items():
            if f.__code__ is not code or f.__defaults__ is not defaults \
                    or f.__kwdefaults__ is not kwdefaults:
                found.append(f"{f.__module__}.{f.__qualname__} rewritten")
                f.__code__, f.__defaults__, f.__kwdefaults__ = code, defaults, kwdefaults
        for f in self.bertlab_functions():  # new ones, if a module was reloaded
            self.code.setdefault(f, (f.__code__, f.__defaults__, f.__kwdefaults__))
        for name, module in self.modules.items():
            if sys.modules.get(name) is not module:
                found.append(f"sys.modules[{name!r}] replaced")
                sys.modules[name] = module
        if sys.gettrace() is not None or sys.getprofile() is not None:
            found.append("a trace or profile function installed")
            sys.settrace(None)
            sys.setprofile(None)
        if self.shell.user_ns is not self.user_ns:
            found.append("the notebook's namespace replaced")
        return found


_state: dict = {}  # mutated, never rebound: the guard watches this module too


def start(secret: str, modules: list[str]) -> None:
    """Import what the tests use (`modules`: what the instructor's cells import) and snapshot it,
    with every bertlab module then loaded. `secret` signs the answers of `after_cell`."""
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]  # no imports from the sandbox
    for name in WATCHED_MODULES + tuple(modules):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # `from x import y` may name an attribute, not a module;
            if e.name != name and not e.name.startswith(HIDDEN):  # the checks are hidden here
                raise
    from IPython import get_ipython

    torch = sys.modules["torch"]
    _state["dynamo_wrapper_code"] = torch._disable_dynamo(torch.manual_seed).__code__
    _state["guard"] = Guard(get_ipython(), set(WATCHED_MODULES) | set(modules))
    _state["secret"] = secret.encode()


def after_cell(record: list[str], rebind: bool, nonce: str) -> str:
    """Restore the references, remember the instructor's `record` names, and before a test
    (`rebind`) reset every name the instructor's cells defined. Raises Tampering if anything had
    been replaced; otherwise answers the grader's `nonce`, signed, so that it knows this ran."""
    guard = _state["guard"]
    found = guard.restore()
    for name in record:
        if name in guard.user_ns:
            guard.bindings[name] = guard.user_ns[name]
    if rebind:
        guard.user_ns.update(guard.bindings)
    if found:
        raise Tampering("; ".join(sorted(found)))
    return sign(_state["secret"], nonce)


def sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), "sha256").hexdigest()


# ----------------------------------------------------------------------------- the launcher

# seccomp: (audit arch, clone, clone3, the other calls that make a process) by machine
SYSCALLS = {"x86_64": (0xC000003E, 56, 435, (57, 58)), "aarch64": (0xC00000B7, 220, 435, ())}
CLONE_THREAD = 0x10000
LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF: load word, jumps, return
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def no_fork_program(machine: str) -> list[tuple[int, int, int, int]]:
    """A seccomp filter that lets the process make threads but no processes: `clone` only with
    CLONE_THREAD, no fork or vfork, and `clone3` reports "not implemented" so that the C library
    falls back to `clone`. Calls of another architecture (or x32) are refused."""
    arch, clone, clone3, forks = SYSCALLS[machine]
    program = [
        (LD, 0, 0, 4),  # seccomp_data.arch
        (JEQ, 0, "deny", arch),
        (LD, 0, 0, 0),  # seccomp_data.nr
        (JGE, "deny", 0, 0x40000000),  # x32 numbering
        (JEQ, "nosys", 0, clone3),
        *[(JEQ, "deny", 0, nr) for nr in forks],
        (JEQ, 0, "allow", clone),
        (LD, 0, 0, 16),  # low half of seccomp_data.args[0]: clone's flags
        (JSET, "allow", "deny", CLONE_THREAD),
    ]
    returns = {"allow": RET_ALLOW, "deny": RET_ERRNO | EPERM, "nosys": RET_ERRNO | ENOSYS}
    at = {label: len(program) + i for i, label in enumerate(returns)}

    def jump(target, i):  # BPF jumps count the instructions to skip
        return at[target] - i - 1 if isinstance(target, str) else target

    code = [(op, jump(jt, i), jump(jf, i), k) for i, (op, jt, jf, k) in enumerate(program)]
    return code + [(RET, 0, 0, value) for value in returns.values()]


def forbid_processes() -> None:
    """Install the no-fork filter on this process and everything it will run."""
    program = no_fork_program(platform.machine())
    filters = (SockFilter * len(program))(*program)
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 22, 38, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(
            PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(SockFprog(len(program), filters)),
            0, 0):
        raise OSError(ctypes.get_errno(), "could not install the seccomp filter")


def limit(memory_mb: int, fsize_mb: int) -> None:
    """Lower this process's limits: address space, file size, no core dumps."""
    for which, value in ((resource.RLIMIT_AS, memory_mb << 20),
                         (resource.RLIMIT_FSIZE, fsize_mb << 20), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def main(argv: list[str]) -> None:
    """`--memory-mb M --fsize-mb F -- command...`: limit, then exec the command."""
    split = argv.index("--")
    options = dict(zip(argv[:split:2], map(int, argv[1:split:2])))
    limit(options["--memory-mb"], options["--fsize-mb"])
    forbid_processes()
    command = argv[split + 1 :]
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
