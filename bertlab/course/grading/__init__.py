"""`bertlab grade`: each submission runs in a kernel of its own, in a bubblewrap sandbox
(`sandbox`), with limits and a tamper guard (`kernel`, the code that runs inside it), driven by the
grader (`grader`); `intake` reads the submissions and `reports` writes the gradebook.

The kernel imports `kernel` from here, so this package loads the grader only when asked for it."""

from .kernel import Limits
from .sandbox import SandboxError

__all__ = ["Limits", "SandboxError", "grade"]


def __getattr__(name: str):
    if name == "grade":
        from .grader import grade

        return grade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
