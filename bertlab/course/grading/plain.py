"""Values as plain data (JSON): what passes between the solution's kernel, the grader and a
student's kernel, never a pickle.

`encode` writes numbers, strings, None, lists, tuples, sets, dicts and tensors; with
`objects=True` (the instructor's side, giving a student's function its inputs) also modules (their
class, attributes, parameters and buffers), dataclasses, torch and Python random generators,
dtypes, and functions given as inputs (as the table of their calls: `Tape`, `Replayer`).
`decode` reads them back; with `objects=False` (the grader reading what a student's kernel
answered) anything but plain values is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib
import math
import random
import types

import numpy as np
import torch
from torch import nn

OBJECT_MODULES = ("torch.", "bertlab.")  # where a module or dataclass of an input may come from


class NotPlain(ValueError):
    """A value that cannot be written as plain data, or read back as such."""


def encode(x, objects: bool = False):
    """`x` as JSON-able data, tagged where JSON has no type of its own."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x if abs(x) < 2**53 else {"$int": str(x)}
    if isinstance(x, float):
        return x if math.isfinite(x) else {"$float": repr(x)}
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return encode(x.item())
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return {"$tensor": [str(t.dtype).removeprefix("torch."), list(t.shape),
                            base64.b64encode(t.reshape(-1).view(torch.uint8).numpy().tobytes()
                                             if t.numel() else b"").decode()]}
    if isinstance(x, np.ndarray):
        return {"$ndarray": encode(torch.from_numpy(np.ascontiguousarray(x)))}
    if isinstance(x, list):
        return [encode(v, objects) for v in x]
    if isinstance(x, tuple):
        return {"$tuple": [encode(v, objects) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"$set": [encode(v, objects) for v in sorted(x, key=repr)]}
    if isinstance(x, dict):
        return {"$dict": [[encode(k, objects), encode(v, objects)] for k, v in x.items()]}
    if objects:
        return encode_object(x)
    raise NotPlain(f"a {type(x).__name__} is not plain data")


class Tape:
    """A function given to the solution's function as an input (a scorer): its calls, recorded
    for the student's function, which gets a `Replayer` of them."""

    def __init__(self, fn, index: int):
        self.fn, self.index, self.calls = fn, index, []

    def __call__(self, *args, **kwargs):
        output = self.fn(*args, **kwargs)
        self.calls.append([encode([list(args), kwargs], True), encode(output)])
        return output


class Replayer:
    """The recorded function: what it returned for the inputs it was given by the solution."""

    def __init__(self, calls: list):
        self.calls = calls

    def __call__(self, *args, **kwargs):
        inputs = encode([list(args), kwargs], True)
        for given, output in self.calls:
            if given == inputs:
                return decode(output)
        raise ValueError("this function was called with inputs the solution never gave it: "
                         "call it as the exercise says")


def encode_object(x):
    if isinstance(x, Tape):
        return {"$tape": x.index}
    if isinstance(x, torch.dtype):
        return {"$dtype": str(x).removeprefix("torch.")}
    if isinstance(x, (types.FunctionType, types.BuiltinFunctionType)):  # F.gelu in a module
        path = f"{getattr(x, '__module__', None)}.{x.__qualname__}"
        try:
            if find(path) is x:
                return {"$function": path}
        except NotPlain:
            pass
    if isinstance(x, torch.Generator):
        return {"$generator": encode(x.get_state())}
    if isinstance(x, random.Random):
        return {"$random": encode(x.getstate())}
    path = f"{type(x).__module__}.{type(x).__qualname__}"
    if isinstance(x, nn.Module) and path.startswith(OBJECT_MODULES):
        return {"$module": [path, encode_module(x)]}
    if dataclasses.is_dataclass(x) and path.startswith(OBJECT_MODULES):
        fields = {f.name: encode(getattr(x, f.name), True) for f in dataclasses.fields(x)
                  if f.init}
        return {"$dataclass": [path, fields]}
    raise NotPlain(f"a {type(x).__name__} cannot be given to a student's kernel")


def encode_module(m: nn.Module) -> dict:
    """A module's attributes, parameters, buffers and submodules. A function set on it that has
    no importable name (the checks' `forward` that refuses to run) becomes one that refuses."""
    own = {}
    for k, v in vars(m).items():
        if not k.startswith("_"):
            try:
                own[k] = encode(v, True)
            except NotPlain:
                if not callable(v):
                    raise
                own[k] = {"$unavailable": f"{type(m).__name__}.{k}"}
    return {"attributes": {"$dict": [[k, v] for k, v in own.items()]},
            "parameters": {k: [encode(p), p.requires_grad] for k, p in m._parameters.items()
                           if p is not None},
            "buffers": {k: encode(b) for k, b in m._buffers.items() if b is not None},
            "modules": {k: encode(c, True) for k, c in m._modules.items() if c is not None}}


def decode(data, objects: bool = False, tapes: list | None = None):
    """The value `encode` wrote; NotPlain if it is not one (or is an object, unless `objects`).
    `tapes` are the recorded calls of the functions among the inputs."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, objects, tapes) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise NotPlain("not data written by bertlab grade")
    (tag, value), = data.items()
    inner = functools.partial(decode, objects=objects, tapes=tapes)
    plain = {"$int": lambda v: int(v), "$float": float, "$tensor": tensor,
             "$ndarray": lambda v: decode(v).numpy(), "$tuple": lambda v: tuple(inner(v)),
             "$set": lambda v: set(map(hashable, inner(v))),
             "$dict": lambda v: {hashable(inner(k)): inner(x) for k, x in v}}
    if tag in plain:
        return plain[tag](value)
    if objects and tag == "$tape" and tapes is not None:
        return Replayer(tapes[value])
    if objects and tag in OBJECTS:
        return OBJECTS[tag](value)
    raise NotPlain(f"{tag.removeprefix('$')} is not plain data")


def kind(data) -> str:
    """What `encode` wrote, with its values left out: types, tensors' dtype and rank, the keys
    of dicts, the kinds in a list (`tensor(float32, 2d)`, `list[int]`, `tuple(int, None)`,
    `tuple[int]` when all its items are of one kind)."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return type(data).__name__ if data is not None else "None"
    if isinstance(data, list):
        return f"list[{' | '.join(sorted({kind(v) for v in data}))}]"
    (tag, value), = data.items()
    if tag == "$tensor":
        return f"tensor({value[0]}, {len(value[1])}d)"
    if tag in ("$int", "$float"):
        return tag[1:]
    if tag == "$tuple":  # a record (int, int, str), or a sequence of one kind like a list
        kinds = [kind(v) for v in value]
        return f"tuple[{kinds[0]}]" if len(set(kinds)) == 1 else f"tuple({', '.join(kinds)})"
    if tag == "$set":
        return f"set[{' | '.join(sorted({kind(v) for v in value}))}]"
    if tag == "$dict":
        return f"dict({', '.join(f'{kind(k)}={kind(v)}' for k, v in value)})"
    if tag in ("$module", "$dataclass"):
        return value[0]
    return tag[1:]


def hashable(x):
    if isinstance(x, list):
        raise NotPlain("a list cannot be a set member or a dict key")
    return x


def tensor(value) -> torch.Tensor:
    dtype, shape, data = value
    dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise NotPlain(f"{value[0]} is not a torch dtype")
    raw = bytearray(base64.b64decode(data))
    if not raw:  # no data: the shape must hold none either (never allocate what was not sent)
        if math.prod(shape) != 0:
            raise NotPlain("a tensor without its data")
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)


def find(path: str):
    """The class or function named `path` (torch's or bertlab's)."""
    if not path.startswith(OBJECT_MODULES):
        raise NotPlain(f"{path} is not a class an input may have")
    module, _, name = path.rpartition(".")
    try:
        while True:  # nested classes: torch.nn.modules.linear.Linear, a.b.Outer.Inner
            try:
                obj = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, outer = module.rpartition(".")
                name = f"{outer}.{name}"
        for part in name.split("."):
            obj = getattr(obj, part)
    except (AttributeError, ImportError, ValueError):
        raise NotPlain(f"{path} cannot be found by its name") from None
    return obj


def module(value) -> nn.Module:
    path, state = value
    cls = find(path)
    m = cls.__new__(cls)
    nn.Module.__init__(m)
    for k, v in decode(state["attributes"], True).items():
        object.__setattr__(m, k, v)
    for k, (p, grad) in state["parameters"].items():
        m._parameters[k] = nn.Parameter(decode(p), requires_grad=grad)
    m._buffers.update({k: decode(b) for k, b in state["buffers"].items()})
    m._modules.update({k: decode(c, True) for k, c in state["modules"].items()})
    return m


def generator(value) -> torch.Generator:
    g = torch.Generator()
    g.set_state(decode(value))
    return g


def random_state(value) -> random.Random:
    r = random.Random()
    r.setstate(decode(value))
    return r


def dataclass(value):
    path, fields = value
    cls = find(path)
    return cls(**{k: decode(v, True) for k, v in fields.items()})


def unavailable(name: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{name} is not available here: use the parts the exercise names")
    return refuse


OBJECTS = {"$dtype": lambda v: getattr(torch, v), "$function": find, "$unavailable": unavailable,
           "$generator": generator,
           "$random": random_state, "$module": module, "$dataclass": dataclass}
