"""What a function calls while it runs, seen through `sys.setprofile`.

Both the checks (in the student's notebook) and `bertlab grade`'s replay (in the student's
kernel, where the checks are hidden) use it to notice an answer that calls bertlab's own version
of what it should write, or a callable its exercise forbids (`torch.softmax`, which also catches
`x.softmax()`; `torch.nn.functional.layer_norm`). Profile events see C functions and methods as
well as Python ones, however they were reached (`F.softmax`, an alias, a `torch.nn.Softmax`).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

PACKAGE = __name__.split(".")[0]  # "bertlab"


def resolve(qualified: str):
    """The object a qualified name like `torch.nn.functional.softmax` names; ValueError if none."""
    module, _, rest = qualified.partition(".")
    try:
        obj = importlib.import_module(module)
        for part in rest.split(".") if rest else ():
            try:
                obj = getattr(obj, part)
            except AttributeError:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
    except (ImportError, AttributeError):
        raise ValueError(f"forbidden: {qualified!r} names nothing that can be imported") from None
    return obj


class Forbidden:
    """Recognises, in profile events, calls of the callables named in `names`. A name of torch's
    (`torch.softmax`) also stands for the tensor method of the same name (`x.softmax()`)."""

    def __init__(self, names: tuple[str, ...]):
        import torch

        self.codes, self.builtins = {}, {}
        self.methods: dict[str, list[tuple[type, str]]] = {}  # method name -> (its class, name)
        for name in names:
            obj = resolve(name)
            if isinstance(obj, types.FunctionType):
                self.codes[obj.__code__] = name
            elif isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType)):
                self.methods.setdefault(obj.__name__, []).append((obj.__objclass__, name))
            elif callable(obj):
                self.builtins[id(obj)] = name
                if name.startswith("torch.") and hasattr(torch.Tensor, obj.__name__):
                    self.methods.setdefault(obj.__name__, []).append((torch._C.TensorBase, name))
            else:
                raise ValueError(f"forbidden: {name!r} is not a function")

    def match(self, frame, event: str, arg) -> str | None:
        if event == "call":
            return self.codes.get(frame.f_code)
        if event == "c_call":
            if id(arg) in self.builtins:
                return self.builtins[id(arg)]
            owner = getattr(arg, "__self__", None)
            for cls, name in self.methods.get(getattr(arg, "__name__", None), ()):
                if isinstance(owner, cls):
                    return name
        return None


@dataclass
class Seen:
    """What a watched run called: bertlab's own functions of the answer's name, and forbidden
    callables (their names as the exercise gave them), each once, in the order first called."""

    bertlab: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)


@contextlib.contextmanager
def watch(fn: Callable, forbidden: tuple[str, ...] = ()):
    """While in the block, note bertlab's own functions named `fn.__name__` that run (the
    package's version of what the exercise asks for) and calls of the `forbidden` callables. If
    the code in the block removes the watch, that counts as a forbidden call (`sys.setprofile`)."""
    name, seen, forbid = getattr(fn, "__name__", None), Seen(), Forbidden(tuple(forbidden))

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name == name:
            module = frame.f_globals.get("__name__", "")
            own = f"{module}.{name}"
            if module.startswith(f"{PACKAGE}.") and not module.startswith(f"{PACKAGE}.course."):
                seen.bertlab += [own] if own not in seen.bertlab else []
        found = forbid.match(frame, event, arg)
        if found and found not in seen.forbidden:
            seen.forbidden.append(found)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        if sys.getprofile() is not profile and "sys.setprofile" not in seen.forbidden:
            seen.forbidden.append("sys.setprofile")
        sys.setprofile(previous)
