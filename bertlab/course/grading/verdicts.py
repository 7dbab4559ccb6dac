"""Verdicts decided outside every kernel: a student's outputs against the solution's.

A test cell of the course's own (one that calls `checks.X(...)`) is run once, in the solution's
kernel, recording each call it makes of the exercise's functions, and each value it gives an
Answer check (driver.py); each student's kernel then makes the same calls of the student's
functions (or reads the same variables). Each call is a case of the test: it passes if its output
equals the solution's (within the checks' tolerance, or the Answer's), it called none of the
callables its exercise forbids, it is of the solution's kinds where the exercise asks for them
(a Python float, a list: the visible check's comparison, `framework.difference`), and it changed
no input in place. A test earns its points in proportion to the cases that pass.
"""

from __future__ import annotations

import json

from ..checks.framework import difference, forbidden_message
from . import plain


def verdicts(calls: list[dict], answers_json: str) -> list[str | None]:
    """For each recorded call, None if the student's answer matches it, else what went wrong
    (naming the case, what was expected and what came back), in one line."""
    try:
        answers = json.loads(answers_json)
    except (TypeError, ValueError):
        answers = None
    if not isinstance(answers, list):
        return ["the kernel gave no answers"] * len(calls)
    return [problem(i, call, answers[i] if i < len(answers) else None, len(calls))
            for i, call in enumerate(calls)]


def problem(i: int, call: dict, answer, total: int) -> str | None:
    """What is wrong with the answer to call `i` (of `total`), or None."""
    if "answer" in call:
        where = f"your answer `{call['name']}` (checks.{call['answer']})"
    else:
        where = f"call {i + 1} of {total} of {call['name']}"
    if not isinstance(answer, dict):
        return f"{where}: no answer"
    if "error" in answer:
        return f"{where}: your function raised {str(answer['error'])[:300]}"
    if isinstance(answer.get("forbidden"), str):
        return f"{where}: {forbidden_message(answer['forbidden'][:100])}"
    try:
        got = plain.decode(answer["output"])
        after = None if "answer" in call else plain.decode(answer["after"])
    except Exception as e:  # anything a kernel sends that is not plain data fails the call
        return f"{where}: the answer is not plain data ({type(e).__name__})"
    tolerance = float(call.get("tolerance") or 0.0)
    what = "value" if "answer" in call else "output"
    exact = bool(call.get("exact"))
    if found := difference(got, plain.decode(call["output"]), what, tolerance, exact):
        return f"{where}: {found}"
    if "answer" not in call and (changed := changed_input(plain.decode(call["after"]), after)):
        return f"{where}: your function changed its input `{changed}` in place"
    return None


def changed_input(expected: list, after) -> str | None:
    """Which input differs after the call from the solution's after the same call."""
    if not isinstance(after, list) or len(after) != 2:
        return "?"
    (args, kwargs), (their_args, their_kwargs) = expected, after
    named = [(f"#{i + 1}", a, b) for i, (a, b) in enumerate(zip(args, their_args))]
    named += [(k, v, their_kwargs.get(k)) for k, v in kwargs.items()]
    for name, mine, theirs in named:
        if mine is not None and difference(theirs, mine, name):
            return name
    return None


def cases(calls: list[dict]) -> list[dict]:
    """Each recorded call with inputs as its kind of case: `name(kinds)` (plain.kind: types,
    dtypes, ranks, keys; no values) and whether the visible check made it. Small: what the
    grader keeps of the solution's calls in OUT/logs."""
    def of(call):
        args, kwargs = call["inputs"]
        given = [plain.kind(a) for a in args] + [f"{k}={plain.kind(v)}"
                                                 for k, v in kwargs["$dict"]]
        return f"{call['name']}({', '.join(given)})"

    return [{"case": of(c), "visible": bool(c.get("visible"))} for c in calls
            if c.get("inputs") is not None]


def unchecked(cases: list[dict]) -> list[str]:
    """The kinds of case (see `cases`) the hidden tests run and the visible check never does:
    what a ✓ did not cover."""
    seen = {c["case"] for c in cases if c["visible"]}
    return sorted({c["case"] for c in cases if not c["visible"]} - seen)
