"""Exact kinds of answers: a check that says "a Python float" or "a list" means it.

`Exact` is an `Exercise` whose comparison first asks that every number the reference gives as a
Python number come back as one (not a 0-d tensor), and every list or tuple come back as the same
kind of sequence, before comparing the values as usual."""

from __future__ import annotations

import numbers

import torch

from .framework import Exercise, describe


def kind_difference(got, expected, where: str) -> str | None:
    """How the kind of `got` differs from that of `expected`, in one line; None when alike."""
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


class Exact(Exercise):
    """An exercise whose answers must have the reference's kinds: Python numbers, lists, tuples."""

    def difference(self, got, expected) -> str | None:
        if self.returns is not None and isinstance(expected, tuple):
            if isinstance(got, (tuple, list)) and len(got) == len(self.returns):
                for name, g, e in zip(self.returns, got, expected):
                    if d := kind_difference(g, e, name):
                        return d
        elif d := kind_difference(got, expected, "output"):
            return d
        return super().difference(got, expected)
