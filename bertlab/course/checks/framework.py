"""The instant-feedback framework: an `Exercise` is a reference, cases and known mistakes; an
`Answer` is a value to predict or measure.

Calling an Exercise with a student's function runs it on every case, compares each result with
the reference's, and reports a ✓, or a ✗ naming the case, what differed and, when a known mistake
gives the same answers, its hint. Calling an Answer with a value compares it with the exact
answer. In a student's notebook a ✗ is printed, so Run All goes on to the end (where
`checks.summary()` lists every exercise's state); everywhere else (a script, pytest, a cell that
still holds its hidden tests, as nbgrader's autograde runs it, or with BERTLAB_CHECKS=raise) it
raises `CheckFailed`. The chapters' exercises are in ch01_... to ch10_...
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ...config import BertConfig
from ..calls import PACKAGE, Forbidden, watch

RTOL, ATOL = 1e-4, 1e-5  # float tensors agree within these (float32, different operation order)


class CheckFailed(AssertionError):
    """Your answer failed a check. Jupyter shows just the message, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


# ----------------------------------------------------------------------------------------------
# Reporting: a ✓ or ✗ line, remembered for `checks.summary()`

STATES: dict[str, str] = {}  # check name -> its last report, in the order first run
HIDDEN_TESTS_MARKER = "### BEGIN HIDDEN TESTS"


def strict() -> bool:
    """Should a failed check raise? Yes, except in a notebook cell of a student's notebook (a
    kernel running a cell without hidden tests), unless BERTLAB_CHECKS=raise."""
    if os.environ.get("BERTLAB_CHECKS") == "raise":
        return True
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        code = kernel.get_parent()["content"]["code"]
    except Exception:  # not in a Jupyter kernel: a script or pytest
        return True
    return HIDDEN_TESTS_MARKER in code


def report(name: str, passed: bool, message: str) -> None:
    """Print a ✓, and print or raise a ✗ (see `strict`); remember it for `summary()`."""
    STATES.pop(name, None)
    STATES[name] = message
    if not passed and strict():
        raise CheckFailed(message)
    print(message)


def state(name: str) -> str:
    """The first line of the check's last report (a ✓ or a ✗), or "· NAME: not run"."""
    return STATES[name].splitlines()[0] if name in STATES else f"· {name}: not run"


# ----------------------------------------------------------------------------------------------
# Exercises: a function to write


@dataclass
class Case:
    label: str  # what is special about this case, e.g. "batch of 1, with padding"
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def run(self, fn: Callable) -> tuple[Any, tuple, dict]:
        """fn on fresh copies of the arguments; returns its result and the copies it was given.

        Configs are read-only inputs and passed as they are: deep-copying a dataclass caches
        `__slotnames__` on its class, which `bertlab grade`'s tamper guard would report."""
        keep = {id(x): x for x in (*self.args, *self.kwargs.values()) if isinstance(x, BertConfig)}
        args, kwargs = copy.deepcopy((self.args, self.kwargs), keep)
        return fn(*args, **kwargs), args, kwargs


@dataclass
class Mistake:
    hint: str  # what went wrong, and how to fix it
    fn: Callable  # a typical wrong answer: an answer that agrees with it gets the hint


class Outcome(NamedTuple):
    """What an answer did on one case."""

    got: Any
    problem: str | None = None  # None when the answer is right
    hint: str | None = None  # set when the problem itself says what to do


class Stop(Exception):
    """The whole check fails at once (not implemented, bertlab's own function called)."""


RUNNING: list[Exercise] = []  # the exercise being checked (bertlab grade's recorder reads it)


def forbidden_message(name: str) -> str:
    if name.startswith(f"{PACKAGE}."):
        return f"this calls bertlab's own `{name}`: write it yourself"
    return f"this calls `{name}`, which this exercise asks you to do without"


@dataclass
class Exercise:
    """A check: call it with your function, `checks.attention(scaled_dot_product_attention)`."""

    name: str
    reference: Callable
    cases: Callable[[], list[Case]]  # built under a fixed seed when the check runs
    mistakes: list[Mistake] = field(default_factory=list)
    hint: str = ""  # given when a case fails and no known mistake explains it
    returns: tuple[str, ...] | None = None  # names of the outputs when it returns a tuple
    # callables the answer may not call: torch's ("torch.softmax") where the exercise says so, and
    # bertlab's own that do the exercise's work ("bertlab.encoder.BertLayer.forward")
    forbidden: tuple[str, ...] = ()
    exact: bool = False  # outputs must be of the reference's kinds: Python numbers, lists, tuples

    def __post_init__(self):
        Forbidden(self.forbidden)  # a name that names nothing is the author's mistake: say so now

    def __call__(self, fn: Callable) -> None:
        try:
            passed, message = self.verdict(fn)
        except Stop as e:
            passed, message = False, f"✗ {self.name}: {e}"
        report(self.name, passed, message)

    def verdict(self, fn: Callable) -> tuple[bool, str]:
        """(passed, the ✓ or ✗ message); raises Stop when the check fails as a whole."""
        if not callable(fn):
            raise Stop(f"pass your function itself, got {describe(fn)}")
        RUNNING.append(self)
        try:
            with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
                torch.manual_seed(0)
                cases = self.cases()
                outcomes = [self.outcome(fn, case) for case in cases]
                failed = [i for i, outcome in enumerate(outcomes) if outcome.problem]
                if not failed:
                    return True, f"✓ {self.name}: {len(cases)}/{len(cases)} cases passed"
                first = failed[0]
                hint = outcomes[first].hint or self.diagnose(cases, outcomes, first)
        finally:
            RUNNING.remove(self)
        return False, (f"✗ {self.name}: {len(cases) - len(failed)}/{len(cases)} cases passed\n"
                       f"  case '{cases[first].label}': {outcomes[first].problem}\n"
                       f"  hint: {hint}")

    def outcome(self, fn: Callable, case: Case) -> Outcome:
        mine = fn is self.reference
        try:
            with watch(fn, () if mine else self.forbidden) as seen:
                got, args, kwargs = case.run(fn)
        except NotImplementedError:
            raise Stop("not implemented yet — replace the `raise NotImplementedError` line with "
                       "your code") from None
        except Exception as e:  # the student's bug: report it, never crash the check
            return Outcome(None, f"your function raised {exception_line(e, fn)}", self.hint)
        if seen.bertlab and not mine:
            raise Stop(f"this calls bertlab's own `{seen.bertlab[0]}`: write it yourself")
        if seen.forbidden:
            return Outcome(got, forbidden_message(seen.forbidden[0]),
                           "write it from the operations the exercise names")
        expected, _, _ = case.run(self.reference)
        if problem := self.difference(got, expected):
            return Outcome(got, problem)
        if name := self.changed_input(case, args, kwargs):
            return Outcome(got, f"your function changed its input `{name}` in place",
                           "leave the inputs as they were: work on a copy (`x.clone()`, "
                           "`list(x)`)")
        return Outcome(got)

    def difference(self, got, expected) -> str | None:
        if self.returns is None or not isinstance(expected, tuple):
            return difference(got, expected, "output", exact=self.exact)
        if not isinstance(got, (tuple, list)) or len(got) != len(self.returns) \
                or (self.exact and not isinstance(got, tuple)):
            return f"return the tuple ({', '.join(self.returns)}), got {describe(got)}"
        for name, g, e in zip(self.returns, got, expected):
            if d := difference(g, e, name, exact=self.exact):
                return d
        return None

    def diagnose(self, cases: list[Case], outcomes: list[Outcome], failed: int) -> str:
        """The hint of the known mistake that gives the same answers as yours on every case your
        function ran, else on the failed case alone; the general hint if none does."""
        def agrees(mistake: Mistake, case: Case, got) -> bool:
            try:
                wrong, _, _ = case.run(mistake.fn)
            except Exception:  # this mistake would have crashed here: not the one
                return False
            return self.difference(got, wrong) is None

        ran = [(case, outcome.got) for case, outcome in zip(cases, outcomes) if not outcome.hint]
        for evidence in (ran, [(cases[failed], outcomes[failed].got)]):
            for mistake in self.mistakes:
                if all(agrees(mistake, case, got) for case, got in evidence):
                    return mistake.hint
        return self.hint

    def changed_input(self, case: Case, args: tuple, kwargs: dict) -> str | None:
        """The name of an argument the answer modified in place, if it did."""
        signature = inspect.signature(self.reference)
        before = signature.bind(*case.args, **case.kwargs).arguments
        after = signature.bind(*args, **kwargs).arguments
        for name, value in before.items():
            if isinstance(value, (torch.Tensor, list, tuple, set, dict)):
                if difference(after[name], value, name):
                    return name
        return None


# ----------------------------------------------------------------------------------------------
# Answers: a value to predict or measure

ANSWER_LISTENERS: list[Callable] = []  # called with (answer, value): bertlab grade's recorder


@dataclass
class Answer:
    """A check of a value: `checks.base_parameters(base_parameters)`. `expected()` gives the
    exact answer (a number, string, list, tuple or tensor); numbers within `tolerance` of it
    (absolute) count as right; `wrong` are typical wrong values (Mistakes whose `fn` takes no
    arguments), each with its hint. A ✗ does not give the answer away."""

    name: str
    expected: Callable[[], Any]
    tolerance: float = 0.0
    hint: str = ""  # given when the value is wrong and no known mistake explains it
    wrong: tuple[Mistake, ...] | list[Mistake] = ()

    def __call__(self, value) -> None:
        for listener in ANSWER_LISTENERS:
            listener(self, value)
        problem = self.problem(value)
        if problem is None:
            report(self.name, True, f"✓ {self.name}: right")
            return
        hint = self.diagnose(value)
        message = f"✗ {self.name}: {problem}" + (f"\n  hint: {hint}" if hint else "")
        report(self.name, False, message)

    def answer(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.expected()

    def problem(self, value) -> str | None:
        """What is wrong with `value`, without saying what the answer is; None if it is right."""
        if value is ...:
            return "not answered yet — replace the `...` with your answer"
        expected = self.answer()
        if difference(value, expected, "your answer", self.tolerance) is None:
            return None
        if found := structure_difference(value, expected):
            return found
        within = f" within {self.tolerance:g} of it" if self.tolerance else ""
        return f"expected the answer{within}, got {shown(value)}, which is not it"

    def diagnose(self, value) -> str:
        for mistake in self.wrong:
            try:
                if difference(value, mistake.fn(), "", self.tolerance or None) is None:
                    return mistake.hint
            except Exception:  # a mistake that cannot be computed here is not the one
                continue
        return self.hint


def shown(value) -> str:
    """A value as a student would recognise it: its repr if short, else its description."""
    if as_number(value) is not None:
        return repr(as_number(value))
    text = repr(value)
    return text if len(text) <= 80 and not isinstance(value, torch.Tensor) else describe(value)


def structure_difference(value, expected) -> str | None:
    """How the kind or shape of `value` differs from the answer's, if it does (this gives no
    value away)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(value, torch.Tensor) or value.shape != expected.shape \
                or value.is_floating_point() != expected.is_floating_point():
            return tensor_difference(value, expected, "your answer")
    elif isinstance(expected, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(expected):
            return f"your answer should be a {type(expected).__name__} of {len(expected)} " \
                   f"items, got {describe(value)}"
    elif as_number(expected) is not None and as_number(value) is None:
        return f"your answer should be a number, got {describe(value)}"
    elif isinstance(expected, str) and not isinstance(value, str):
        return f"your answer should be a string, got {describe(value)}"
    return None


# ----------------------------------------------------------------------------------------------
# Comparing an answer with the expected one, in words


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple, set, dict)):
        return f"a {type(x).__name__} of {len(x)} items"
    if x is None:
        return "None"
    text = repr(x)
    return f"{text[:40] + '...' if len(text) > 40 else text} ({type(x).__name__})"


def as_number(x):
    """A plain Python number from a number or a one-element tensor; None for anything else."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return x
    return None


def kind_difference(got, expected, where: str) -> str | None:
    """How the kind of `got` differs from that of `expected`, in one line; None when alike: a
    Python number where the reference gives one (not a 0-d tensor), the same kind of sequence."""
    if isinstance(expected, bool):
        return None if isinstance(got, bool) else f"{where} should be a bool, got {describe(got)}"
    if isinstance(expected, numbers.Number) and not isinstance(expected, torch.Tensor):
        kind = "int" if isinstance(expected, numbers.Integral) else "float"
        fits = (isinstance(got, numbers.Integral) if kind == "int"
                else isinstance(got, numbers.Real)) and not isinstance(got, bool)
        if not fits:
            return (f"{where} should be a Python {kind}, got {describe(got)}"
                    + (" (use .item())" if isinstance(got, torch.Tensor) else ""))
        return None
    if isinstance(expected, (list, tuple)):
        if type(got) is not type(expected):
            return f"{where} should be a {type(expected).__name__}, got {describe(got)}"
        if len(got) == len(expected):
            for i, (g, e) in enumerate(zip(got, expected)):
                if d := kind_difference(g, e, f"{where}[{i}]"):
                    return d
    return None


def difference(got, expected, where: str, tolerance: float = 0.0,
               exact: bool = False) -> str | None:
    """How `got` differs from `expected`, in one line; None when they agree. Numbers agree within
    `tolerance` (absolute) if it is given, else floats within the checks' RTOL and ATOL. `exact`:
    the kinds must agree too (see kind_difference)."""
    if exact and (found := kind_difference(got, expected, where)):
        return found
    if isinstance(expected, torch.Tensor):
        return tensor_difference(got, expected, where, tolerance)
    if isinstance(expected, (list, tuple)):
        return sequence_difference(got, expected, where, tolerance)
    if isinstance(expected, numbers.Number) and not isinstance(expected, bool) and tolerance:
        value = as_number(got)
        if value is None:
            return f"{where} should be a number, got {describe(got)}"
        if not abs(value - expected) <= tolerance:
            return f"{where}: expected {expected:g} ± {tolerance:g}, got {value:g}"
        return None
    if isinstance(expected, float):
        value = as_number(got)
        if value is None:
            return f"{where} should be a number, got {describe(got)}"
        if not math.isclose(value, expected, rel_tol=RTOL, abs_tol=ATOL):
            e, g = distinct(expected, value)
            return f"{where}: expected {e}, got {g}"
        return None
    if isinstance(expected, int) and not isinstance(expected, bool):
        value = as_number(got)
        if value is None or not float(value).is_integer():
            return f"{where} should be a whole number, got {describe(got)}"
        return None if value == expected else f"{where}: expected {expected}, got {int(value)}"
    if type(got) is not type(expected) or got != expected:
        return f"{where}: expected {expected!r}, got {describe(got)}"
    return None


def distinct(expected: float, got: float) -> tuple[str, str]:
    """The two numbers with just enough significant digits (4 at least) to tell them apart."""
    for digits in range(4, 18):
        e, g = f"{expected:.{digits}g}", f"{got:.{digits}g}"
        if e != g:
            return e, g
    return repr(expected), repr(got)


def sequence_difference(got, expected, where: str, tolerance: float = 0.0) -> str | None:
    kind = type(expected).__name__
    if not isinstance(got, (list, tuple)):
        return f"{where} should be a {kind} of {len(expected)} items, got {describe(got)}"
    inner = (f"{where} has {len(got)} items, expected {len(expected)}"
             if len(got) != len(expected) else
             next(filter(None, (difference(g, e, f"{where}[{i}]", tolerance)
                                for i, (g, e) in enumerate(zip(got, expected)))), None))
    if inner is None:
        return None
    shown = repr(expected), repr(got)
    if not any(isinstance(x, torch.Tensor) for x in expected) and max(map(len, shown)) < 100:
        return f"{where}: expected {shown[0]}, got {shown[1]}"  # short: show it all
    return inner


def tensor_difference(got, expected: torch.Tensor, where: str,
                      tolerance: float = 0.0) -> str | None:
    shape = tuple(expected.shape)
    if not isinstance(got, torch.Tensor):
        return f"{where} should be a tensor of shape {shape}, got {describe(got)}"
    if tuple(got.shape) != shape:
        return f"{where} has shape {tuple(got.shape)}, expected {shape}"
    floating = expected.is_floating_point()
    if got.is_floating_point() != floating or (not floating and got.dtype != expected.dtype):
        return f"{where} has dtype {got.dtype}, expected {expected.dtype}"
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if floating:
        rtol, atol = (0.0, tolerance) if tolerance else (RTOL, ATOL)
        same = torch.isclose(got.double(), expected.double(), rtol, atol, equal_nan=True)
    else:
        same = got == expected
    if same.all():
        return None
    index = tuple((~same).nonzero()[0].tolist())
    at = f"{where}[{', '.join(map(str, index))}]" if index else where
    g, e = got[index].item(), expected[index].item()
    values = "expected {}, got {}".format(*distinct(e, g)) if floating else \
        f"expected {e}, got {g}"
    count = int((~same).sum())
    return f"{at}: {values}" + (f" ({count} of {same.numel()} values differ)" if count > 1 else "")


def exception_line(e: Exception, fn: Callable) -> str:
    """`TypeError: message (line 4: the line)`, the line being the last one of fn's own code."""
    message = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if code is not None and f.filename == code.co_filename and f.line]
    where = f" (line {frames[-1].lineno}: {frames[-1].line.strip()})" if frames else ""
    return f"{type(e).__name__}: {message}{where}"


def probabilities(*shape: int) -> torch.Tensor:
    """Random rows that sum to 1 over the last axis, like attention weights."""
    return (2 * torch.randn(*shape)).softmax(-1)
