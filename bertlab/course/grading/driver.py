"""The calls that decide a verdict, run in a kernel (imported there by the grader).

In the solution's kernel, `record(names, answers)` wraps the solution's functions of those names;
the test cell then runs as usual, and `recorded()` hands the grader every call a test made
(inputs, output, the inputs again afterwards, and the callables the exercise forbids), as plain
data. A check of a value (`checks.base_parameters(base_parameters)`, an `Answer`) is recorded as
a call too: the variable's name (`answers` maps the check to it), the solution's value and the
tolerance. In a student's kernel, `replay(calls)` makes the same calls of the student's functions
(or reads the same variables) and hands back what they returned, and which forbidden callables
they called. The grader compares the two outside both kernels (see verdicts.py): whatever a
submission does to its own kernel, it earns points only for outputs equal to the solution's.
"""

from __future__ import annotations

import functools
import json

from .. import calls as watching
from . import plain

_calls: list[dict] = []  # the calls recorded in this kernel
_depth = [0]  # calls inside a recorded call (the solution's softmax in its attention) are its own


def record(names: list[str], answers: dict[str, str] | None = None) -> None:
    """Wrap the notebook's functions `names` so that their top-level calls are recorded, and
    record the value given to each Answer check of `answers` (check name -> variable name)."""
    from IPython import get_ipython

    from ..checks import framework

    namespace = get_ipython().user_ns
    _calls.clear()
    for name in names:
        if callable(namespace.get(name)) and not hasattr(namespace[name], "__recorded__"):
            namespace[name] = recorder(name, namespace[name])
    framework.ANSWER_LISTENERS[:] = [answer_recorder(answers or {})]


def answer_recorder(answers: dict[str, str]):
    def recorded(answer, value) -> None:
        call = {"name": answers.get(answer.name), "answer": answer.name,
                "tolerance": answer.tolerance}
        try:
            if call["name"] is None:
                raise plain.NotPlain(f"checks.{answer.name} is not given a variable by name")
            call["output"] = plain.encode(value)
        except plain.NotPlain as e:
            call["problem"] = f"the answer to {answer.name}: {e}"
        _calls.append(call)

    return recorded


def running() -> dict:
    """What the exercise being checked now, if one is, asks of every call: the callables it
    forbids, and whether its outputs must be of the reference's kinds; and whether the call is
    the visible check's (not the hidden tests')."""
    from ..checks import framework

    exercise = framework.RUNNING[-1] if framework.RUNNING else None
    return {"forbidden": list(exercise.forbidden) if exercise else [],
            "exact": bool(exercise and exercise.exact), "visible": exercise is not None}


def recorder(name: str, fn):
    @functools.wraps(fn)
    def recorded(*args, **kwargs):
        if _depth[0]:
            return fn(*args, **kwargs)
        call = {"name": name, **running()}
        tapes = []

        def tape(x):
            if callable(x) and not isinstance(x, (type, plain.nn.Module)):
                tapes.append(plain.Tape(x, len(tapes)))
                return tapes[-1]
            return x

        args, kwargs = [tape(a) for a in args], {k: tape(v) for k, v in kwargs.items()}
        try:
            call["inputs"] = plain.encode([list(args), kwargs], objects=True)
        except plain.NotPlain as e:
            call["inputs"], call["problem"] = None, str(e)
        _depth[0] += 1
        try:
            output = fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
        call["tapes"] = [t.calls for t in tapes]
        if "problem" not in call:
            try:
                call["output"] = plain.encode(output)
                call["after"] = changeable(args, kwargs)
            except plain.NotPlain as e:
                call["problem"] = f"its output: {e}"
        _calls.append(call)
        return output

    recorded.__recorded__ = fn
    return recorded


def changeable(args, kwargs):
    """The inputs a function could have changed in place, as the checks compare them (tensors and
    containers of plain data; None for the others), as plain data."""
    def one(x):
        if isinstance(x, (plain.torch.Tensor, list, tuple, set, dict)):
            try:
                plain.encode(x)
                return x
            except plain.NotPlain:
                return None
        return None

    return plain.encode([[one(a) for a in args], {k: one(v) for k, v in kwargs.items()}])


def unrecord(names: list[str]) -> None:
    """Put the notebook's own functions back."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    for name in names:
        namespace[name] = getattr(namespace.get(name), "__recorded__", namespace.get(name))


def recorded() -> str:
    """The calls recorded; what a function's exercise asks (forbidden callables, exact kinds)
    applies to all its calls, those of the hidden tests too, made outside the check."""
    from ..checks import framework

    framework.ANSWER_LISTENERS.clear()
    forbidden: dict[str, list[str]] = {}
    exact: dict[str, bool] = {}
    for call in _calls:
        forbidden.setdefault(call["name"], [])
        forbidden[call["name"]] += [f for f in call.get("forbidden", ())
                                    if f not in forbidden[call["name"]]]
        exact[call["name"]] = exact.get(call["name"], False) or call.get("exact", False)
    for call in _calls:
        if "answer" not in call:
            call["forbidden"], call["exact"] = forbidden[call["name"]], exact[call["name"]]
    return json.dumps(_calls)


def replay(calls: str) -> str:
    """Make each recorded call of the notebook's functions (or read each answer's variable);
    their outputs, or what they raised, and the forbidden callables they called."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    return json.dumps([answer(call, namespace) for call in json.loads(calls)])


def answer(call: dict, namespace: dict) -> dict:
    """What the notebook gives for one recorded call, as plain data."""
    try:
        if call["name"] not in namespace:
            raise NameError(f"name {call['name']!r} is not defined")
        if "answer" in call:
            if namespace[call["name"]] is ...:
                raise ValueError("not answered yet (the `...` is still there)")
            return {"output": plain.encode(namespace[call["name"]])}
        args, kwargs = plain.decode(call["inputs"], objects=True, tapes=call["tapes"])
        fn = namespace[call["name"]]
        with watching.watch(fn, tuple(call.get("forbidden", ()))) as seen:
            output = fn(*args, **kwargs)
        found = {"forbidden": seen.forbidden[0]} if seen.forbidden else {}
        return {"output": plain.encode(output), "after": changeable(args, kwargs), **found}
    except Exception as e:  # the student's bug: it fails this call
        return {"error": f"{type(e).__name__}: {e}"[:500]}
