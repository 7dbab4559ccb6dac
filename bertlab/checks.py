"""Instant feedback for the exercise notebooks.

`checks.attention(my_attention)` runs your function on a few small cases, compares it with the
reference, and either prints "✓ attention: 5/5 cases passed" or raises `CheckFailed` saying which
case failed, how (shape, dtype or first differing value), and what the mistake probably is.

Every check is an `Exercise`: a reference, a few cases, and typical mistakes, each a wrong
implementation with a hint. When your answer fails a case and agrees with a known mistake on it,
the check gives that mistake's hint.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from torch import nn, randn

from .attention import MultiHeadSelfAttention, scaled_dot_product_attention
from .attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from .config import BertConfig
from .data.pretraining import truncate_seq_pair as truncate_in_place
from .encoder import BertLayer
from .model import IGNORE_INDEX, BertModel
from .training import lr_at as reference_lr_at

RTOL, ATOL = 1e-4, 1e-5  # float tensors agree within these (float32, different operation order)


class CheckFailed(AssertionError):
    """Your answer failed a check. Jupyter shows just the message, without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


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


@dataclass
class Exercise:
    """A check: call it with your function, `checks.attention(scaled_dot_product_attention)`."""

    name: str
    reference: Callable
    cases: Callable[[], list[Case]]  # built under a fixed seed when the check runs
    mistakes: list[Mistake] = field(default_factory=list)
    hint: str = ""  # given when a case fails and no known mistake explains it
    returns: tuple[str, ...] | None = None  # names of the outputs when it returns a tuple

    def __call__(self, fn: Callable) -> None:
        if not callable(fn):
            raise CheckFailed(f"✗ {self.name}: pass your function itself, got {describe(fn)}")
        with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
            torch.manual_seed(0)
            cases = self.cases()
            outcomes = [self.outcome(fn, case) for case in cases]
            failed = [i for i, outcome in enumerate(outcomes) if outcome.problem]
            if not failed:
                print(f"✓ {self.name}: {len(cases)}/{len(cases)} cases passed")
                return
            first = failed[0]
            hint = outcomes[first].hint or self.diagnose(cases, outcomes, first)
        raise CheckFailed(f"✗ {self.name}: {len(cases) - len(failed)}/{len(cases)} cases passed\n"
                          f"  case '{cases[first].label}': {outcomes[first].problem}\n"
                          f"  hint: {hint}")

    def outcome(self, fn: Callable, case: Case) -> Outcome:
        try:
            got, args, kwargs = case.run(fn)
        except NotImplementedError:
            raise CheckFailed(f"✗ {self.name}: not implemented yet — replace the "
                              "`raise NotImplementedError` line with your code") from None
        except Exception as e:  # the student's bug: report it, never crash the check
            return Outcome(None, f"your function raised {exception_line(e, fn)}", self.hint)
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
            return difference(got, expected, "output")
        if not isinstance(got, (tuple, list)) or len(got) != len(self.returns):
            return f"return the tuple ({', '.join(self.returns)}), got {describe(got)}"
        for name, g, e in zip(self.returns, got, expected):
            if d := difference(g, e, name):
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


def difference(got, expected, where: str) -> str | None:
    """How `got` differs from `expected`, in one line; None when they agree."""
    if isinstance(expected, torch.Tensor):
        return tensor_difference(got, expected, where)
    if isinstance(expected, (list, tuple)):
        return sequence_difference(got, expected, where)
    if isinstance(expected, float):
        value = as_number(got)
        if value is None:
            return f"{where} should be a number, got {describe(got)}"
        if not math.isclose(value, expected, rel_tol=RTOL, abs_tol=ATOL):
            return f"{where}: expected {expected:.6g}, got {value:.6g}"
        return None
    if isinstance(expected, int) and not isinstance(expected, bool):
        value = as_number(got)
        if value is None or not float(value).is_integer():
            return f"{where} should be a whole number, got {describe(got)}"
        return None if value == expected else f"{where}: expected {expected}, got {int(value)}"
    if type(got) is not type(expected) or got != expected:
        return f"{where}: expected {expected!r}, got {describe(got)}"
    return None


def sequence_difference(got, expected, where: str) -> str | None:
    kind = type(expected).__name__
    if not isinstance(got, (list, tuple)):
        return f"{where} should be a {kind} of {len(expected)} items, got {describe(got)}"
    inner = (f"{where} has {len(got)} items, expected {len(expected)}"
             if len(got) != len(expected) else
             next(filter(None, (difference(g, e, f"{where}[{i}]")
                                for i, (g, e) in enumerate(zip(got, expected)))), None))
    if inner is None:
        return None
    shown = repr(expected), repr(got)
    if not any(isinstance(x, torch.Tensor) for x in expected) and max(map(len, shown)) < 100:
        return f"{where}: expected {shown[0]}, got {shown[1]}"  # short: show it all
    return inner


def tensor_difference(got, expected: torch.Tensor, where: str) -> str | None:
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
        same = torch.isclose(got.double(), expected.double(), RTOL, ATOL, equal_nan=True)
    else:
        same = got == expected
    if same.all():
        return None
    index = tuple((~same).nonzero()[0].tolist())
    at = f"{where}[{', '.join(map(str, index))}]" if index else where
    g, e = got[index].item(), expected[index].item()
    values = f"expected {e:.4g}, got {g:.4g}" if floating else f"expected {e}, got {g}"
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


# ----------------------------------------------------------------------------------------------
# Chapter 1: tokens

VOCAB = {"[UNK]", "un", "##aff", "##able", "play", "##ing", "##er", "##s", "p", "##l", "##a",
         "##y", "the", "them", "##m", "a", "u", "##n"}


def reference_wordpiece(word, vocab, unk="[UNK]"):
    """The `tokenizers` library's WordPiece on the same vocabulary."""
    ids = {piece: i for i, piece in enumerate(sorted(set(vocab) | {unk}))}
    return Tokenizer(WordPiece(ids, unk_token=unk)).encode(word).tokens


def wrong_wordpiece(longest=True, prefix="##", whole_word_unk=True):
    """Greedy WordPiece with one thing wrong, chosen by the flags."""
    def tokenize(word, vocab, unk="[UNK]"):
        pieces, start = [], 0
        while start < len(word):
            ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
            mark = prefix if start else ""
            end = next((end for end in ends if mark + word[start:end] in vocab), None)
            if end is None:
                return [unk] if whole_word_unk else pieces + [unk]
            pieces.append(mark + word[start:end])
            start = end
        return pieces
    return tokenize


wordpiece = Exercise(
    "wordpiece", reference_wordpiece,
    lambda: [Case(word, (word, VOCAB)) for word in
             ("unaffable", "playing", "players", "them", "a", "xyz", "playx")],
    [Mistake("start from the longest piece in the vocabulary and shorten it, not the shortest",
             wrong_wordpiece(longest=False)),
     Mistake("pieces after the first are looked up, and returned, with the '##' prefix",
             wrong_wordpiece(prefix="")),
     Mistake("when no piece matches, the *whole word* becomes [UNK], not just the rest of it",
             wrong_wordpiece(whole_word_unk=False))],
    hint="at each position take the longest piece in the vocabulary ('##' + piece after the "
         "first), then continue after it; if none matches, return [unk]")


def reference_build_inputs(tokens_a, tokens_b=None):
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, "[SEP]"]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


def build_inputs_cases():
    return [Case("a pair", (["the", "cat"], ["it", "sat", "down"])),
            Case("one sentence", (["hello", "world"],)),
            Case("a pair of one-token sentences", (["yes"], ["no"]))]


def last_sep_in_segment_0(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    return tokens, segments[:-1] + [0]


def first_sep_in_segment_1(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    if tokens_b is not None:
        segments[len(tokens_a) + 1] = 1
    return tokens, segments


build_inputs = Exercise(
    "build_inputs", reference_build_inputs, build_inputs_cases,
    [Mistake("the final [SEP] belongs to sentence B: its segment id is 1", last_sep_in_segment_0),
     Mistake("the [SEP] after A closes A: its segment id is 0", first_sep_in_segment_1),
     Mistake("every sentence ends with [SEP], the last one too",
             lambda a, b=None: tuple(x[:-1] for x in reference_build_inputs(a, b)))],
    hint="[CLS] A [SEP] get segment 0, B [SEP] get segment 1; one sentence is [CLS] A [SEP]",
    returns=("tokens", "segment_ids"))


def reference_pad_batch(sequences, pad_id=0):
    T = max(len(s) for s in sequences)
    input_ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in sequences])  # (B, T)
    attention_mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences])  # (B, T)
    return input_ids, attention_mask


def pad_left(sequences, pad_id=0):
    ids, mask = reference_pad_batch([s[::-1] for s in sequences], pad_id)
    return ids.flip(1), mask.flip(1)


pad_batch = Exercise(
    "pad_batch", reference_pad_batch,
    lambda: [Case("three lengths", ([[101, 7, 8, 102], [101, 9, 102], [101, 5, 6, 4, 102]],)),
             Case("batch of 1", ([[101, 7, 102]],)),
             Case("equal lengths, pad_id=3", ([[1, 2], [4, 5]], 3)),
             Case("pad_id=3", ([[1, 2, 9], [4]], 3))],
    [Mistake("the attention mask is 1 for real tokens and 0 for padding, not the other way round",
             lambda s, pad_id=0: (reference_pad_batch(s, pad_id)[0],
                                  1 - reference_pad_batch(s, pad_id)[1])),
     Mistake("pad on the right: the tokens start at position 0", pad_left),
     Mistake("return the mask as integers (torch.long), 1 = token, 0 = padding",
             lambda s, pad_id=0: (reference_pad_batch(s, pad_id)[0],
                                  reference_pad_batch(s, pad_id)[1].bool())),
     Mistake("pad with `pad_id`, not always 0",
             lambda s, pad_id=0: reference_pad_batch(s, 0))],
    hint="pad every sequence on the right with pad_id to the longest length; the mask is 1 "
         "where there is a token; both are torch.long tensors of shape (B, T)",
    returns=("input_ids", "attention_mask"))


# ----------------------------------------------------------------------------------------------
# Chapter 2: embeddings


def reference_cosine_similarity(a, b):  # (N, C), (M, C) -> (N, M)
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def cosine_cases():
    a = randn(3, 4)
    return [Case("3 against 5 vectors", (a, randn(5, 4))),
            Case("one against one", (randn(1, 6), randn(1, 6))),
            Case("long and short vectors", (a, torch.cat([10 * a, 0.1 * a])))]


cosine_similarity = Exercise(
    "cosine_similarity", reference_cosine_similarity, cosine_cases,
    [Mistake("that is the plain dot product: divide each vector by its length first",
             lambda a, b: a @ b.T),
     Mistake("normalize each *row* (dim=-1): every vector gets length 1",
             lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T),
     Mistake("normalize both a and b", lambda a, b: F.normalize(a, dim=-1) @ b.T),
     Mistake("normalize both a and b", lambda a, b: a @ F.normalize(b, dim=-1).T)],
    hint="cos(a_i, b_j) = a_i·b_j / (|a_i| |b_j|): normalize the rows, then one matrix product")


def reference_embedding_sum(input_ids, token_type_ids, word, position, segment):
    T = input_ids.size(1)
    return word[input_ids] + position[:T] + segment[token_type_ids]  # (B, T, C)


def embedding_cases():
    V, P, C = 11, 12, 4
    tables = randn(V, C), randn(P, C), randn(3, C)
    ids = torch.tensor([[2, 5, 7, 1, 0], [3, 3, 9, 10, 4]])
    segments = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    return [Case("batch of 2", (ids, segments, *tables)),
            Case("batch of 1, three segment types", (ids[:1], torch.tensor([[0, 1, 1, 2, 2]]),
                                                     *tables)),
            Case("as long as the position table", (torch.arange(P)[None] % V,
                                                   torch.zeros(1, P, dtype=torch.long), *tables))]


embedding_sum = Exercise(
    "embedding_sum", reference_embedding_sum, embedding_cases,
    [Mistake("add the position embeddings: the rows 0..T-1 of the position table",
             lambda i, s, w, p, g: w[i] + g[s]),
     Mistake("add the segment embeddings, looked up with token_type_ids",
             lambda i, s, w, p, g: w[i] + p[:i.size(1)]),
     Mistake("positions count from 0: the first token gets row 0 of the position table",
             lambda i, s, w, p, g: w[i] + p[1:i.size(1) + 1] + g[s]),
     Mistake("the position table is indexed by the position 0..T-1, not by the token id",
             lambda i, s, w, p, g: w[i] + p[i] + g[s])],
    hint="word[input_ids] + position[0..T-1] + segment[token_type_ids], shape (B, T, C)")


def reference_layer_norm(x, weight, bias, eps=1e-12):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def layer_norm_cases():
    C = 8
    return [Case("(2, 3, 8)", (randn(2, 3, C), 1 + randn(C) / 4, randn(C) / 4)),
            Case("a single vector", (randn(1, 1, 5), 1 + randn(5) / 4, randn(5) / 4)),
            Case("tiny values, eps=1e-5", (1e-3 * randn(4, C), torch.ones(C), torch.zeros(C)),
                 dict(eps=1e-5))]


layer_norm = Exercise(
    "layer_norm", reference_layer_norm, layer_norm_cases,
    [Mistake("use the biased variance, x.var(-1, unbiased=False) (divide by C, not C - 1)",
             lambda x, w, b, eps=1e-12: (x - x.mean(-1, keepdim=True))
             / (x.var(-1, keepdim=True) + eps).sqrt() * w + b),
     Mistake("eps goes inside the square root: (x - mean) / sqrt(var + eps)",
             lambda x, w, b, eps=1e-12: (x - x.mean(-1, keepdim=True))
             / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * w + b),
     Mistake("scale by weight and shift by bias after normalizing",
             lambda x, w, b, eps=1e-12: F.layer_norm(x, x.shape[-1:], eps=eps))],
    hint="normalize over the last axis (the C features of each token): mean and biased "
         "variance over dim=-1 with keepdim=True, then * weight + bias")


# ----------------------------------------------------------------------------------------------
# Chapter 3: attention


def softmax_cases():
    return [Case("a vector", (randn(5),)),
            Case("(3, 5) rows", (randn(3, 5),)),
            Case("(2, 3, 4)", (randn(2, 3, 4),)),
            Case("large scores", (torch.tensor([[1000.0, 1001.0, 1002.0], [0.0, 0.0, -1000.0]]),)),
            Case("a -inf score (masked)", (torch.tensor([[0.0, float("-inf"), 1.0]]),))]


softmax = Exercise(
    "softmax", lambda x: torch.softmax(x, dim=-1), softmax_cases,
    [Mistake("subtract each row's max before exp(): exp(1000) overflows to inf, and inf/inf is "
             "NaN; the result is the same without the overflow",
             lambda x: x.exp() / x.exp().sum(-1, keepdim=True)),
     Mistake("softmax over the last axis (dim=-1): each row should sum to 1",
             lambda x: torch.softmax(x, dim=0)),
     Mistake("divide by the sum over each row (keepdim=True), not over the whole tensor",
             lambda x: (x - x.max()).exp() / (x - x.max()).exp().sum())],
    hint="exp(x - max) / sum(exp(x - max)), max and sum over dim=-1 with keepdim=True")


def reference_padding_mask(attention_mask):  # (B, T) -> (B, 1, T)
    return heads_padding_mask(attention_mask)[:, 0]


padding_mask = Exercise(
    "padding_mask", reference_padding_mask,
    lambda: [Case("padding in one row", (torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),)),
             Case("batch of 1", (torch.tensor([[1, 1, 0]]),)),
             Case("no padding", (torch.ones(3, 2, dtype=torch.long),))],
    [Mistake("return a bool tensor (`.bool()`): True where a key may be attended",
             lambda m: m[:, None, :]),
     Mistake("True marks the keys that may be attended (the real tokens), not the padding",
             lambda m: m[:, None, :] == 0),
     Mistake("padding is on the *keys*: shape (B, 1, T), so the row broadcasts over the queries",
             lambda m: m.bool()[:, :, None]),
     Mistake("add the query axis: (B, 1, T) broadcasts against the (B, T, T) scores",
             lambda m: m.bool())],
    hint="attention_mask.bool() with an axis added in the middle: (B, T) -> (B, 1, T)")


def attention_cases():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return [Case("one sequence (T=4, d=8), no mask", (randn(4, 8), randn(4, 8), randn(4, 8))),
            Case("batch of 2, Tq=3 != Tk=5, d_v=6", (randn(2, 3, 8), randn(2, 5, 8),
                                                     randn(2, 5, 6))),
            Case("padding mask (B, 1, T)", (randn(2, 5, 8), randn(2, 5, 8), randn(2, 5, 8),
                                            reference_padding_mask(mask))),
            Case("heads (B, H, T, d), mask (B, 1, 1, T)", (randn(2, 3, 5, 4), randn(2, 3, 5, 4),
                                                           randn(2, 3, 5, 4),
                                                           heads_padding_mask(mask))),
            Case("batch of 1 with padding", (randn(1, 4, 8), randn(1, 4, 8), randn(1, 4, 8),
                                             torch.tensor([[[True, True, True, False]]])))]


def softmax_over_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-2)
    return weights @ v, weights


def zeroed_after_softmax(q, k, v, mask=None):
    _, weights = scaled_dot_product_attention(q, k, v)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


attention = Exercise(
    "attention", scaled_dot_product_attention, attention_cases,
    [Mistake("forgot to scale by 1/sqrt(d)? divide the scores q·k by sqrt(d), d = q.size(-1)",
             lambda q, k, v, mask=None: scaled_dot_product_attention(q * q.size(-1) ** 0.5, k, v,
                                                                     mask)),
     Mistake("scale by 1/sqrt(d), not 1/d",
             lambda q, k, v, mask=None: scaled_dot_product_attention(q / q.size(-1) ** 0.5, k, v,
                                                                     mask)),
     Mistake("softmax over the wrong axis? each row of weights should sum to 1 over the keys "
             "(dim=-1)", softmax_over_queries),
     Mistake("the mask is ignored: where it is False set the score to -inf (or a very negative "
             "number) before the softmax",
             lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v)),
     Mistake("the mask is upside down: True means 'may attend', so fill where ~mask",
             lambda q, k, v, mask=None: scaled_dot_product_attention(
                 q, k, v, None if mask is None else ~mask)),
     Mistake("mask the scores *before* the softmax: zeroing weights afterwards leaves rows that "
             "no longer sum to 1", zeroed_after_softmax)],
    hint="scores = q @ k.transpose(-2, -1) / sqrt(d); masked_fill(~mask, -inf); softmax(dim=-1); "
         "return (weights @ v, weights)",
    returns=("output", "weights"))


# ----------------------------------------------------------------------------------------------
# Chapter 4: multi-head attention


def reference_split_heads(x, num_heads):  # (B, T, C) -> (B, H, T, C/H)
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


split_heads = Exercise(
    "split_heads", reference_split_heads,
    lambda: [Case("(2, 5, 12), 3 heads", (randn(2, 5, 12), 3)),
             Case("batch of 1, 2 heads", (randn(1, 4, 8), 2)),
             Case("one head", (randn(2, 3, 4), 1)),
             Case("as many heads as features", (randn(2, 3, 6), 6))],
    [Mistake("view as (B, T, H, D) first — each token's C features are cut into H pieces — then "
             "swap T and H", lambda x, h: x.reshape(x.size(0), h, x.size(1), -1)),
     Mistake("after the view to (B, T, H, D), transpose(1, 2) to get (B, H, T, D)",
             lambda x, h: x.reshape(x.size(0), x.size(1), h, -1)),
     Mistake("head h holds the consecutive features h*D..(h+1)*D-1: view (B, T, H, D), not "
             "(B, T, D, H)", lambda x, h: x.reshape(*x.shape[:2], -1, h).permute(0, 3, 1, 2))],
    hint="x.view(B, T, H, C // H).transpose(1, 2)")


merge_heads = Exercise(
    "merge_heads", MultiHeadSelfAttention.merge_heads,
    lambda: [Case("(2, 3, 5, 4)", (randn(2, 3, 5, 4),)),
             Case("batch of 1", (randn(1, 2, 3, 4),)),
             Case("one head", (randn(2, 1, 3, 4),))],
    [Mistake("transpose(1, 2) back to (B, T, H, D) before the reshape, or the heads get mixed "
             "across tokens", lambda x: x.reshape(x.size(0), x.size(2), -1)),
     Mistake("heads go one after another: (B, T, H, D) -> (B, T, H*D), not D-major",
             lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), x.size(2), -1))],
    hint="x.transpose(1, 2).reshape(B, T, H * D) (reshape, not view: after transpose the memory "
         "is not contiguous)")


def reference_multi_head_attention(x, query, key, value, output, num_heads, mask=None):
    q, k, v = (reference_split_heads(f(x), num_heads) for f in (query, key, value))  # (B, H, T, D)
    context, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, D)
    return output(MultiHeadSelfAttention.merge_heads(context))  # (B, T, C)


def multi_head_cases():
    def projections(C):
        return tuple(nn.Linear(C, C) for _ in range(4))
    mask = heads_padding_mask(torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]))
    return [Case("(2, 5, 12), 3 heads", (randn(2, 5, 12), *projections(12), 3)),
            Case("with a padding mask", (randn(2, 5, 12), *projections(12), 3, mask)),
            Case("batch of 1, 4 heads", (randn(1, 3, 8), *projections(8), 4))]


multi_head_attention = Exercise(
    "multi_head_attention", reference_multi_head_attention, multi_head_cases,
    [Mistake("finish with the output projection: output(merged heads)",
             lambda x, q, k, v, o, h, mask=None: reference_multi_head_attention(
                 x, q, k, v, nn.Identity(), h, mask)),
     Mistake("split q, k and v into num_heads heads: each head scales by 1/sqrt(C/H) and has "
             "its own softmax", lambda x, q, k, v, o, h, mask=None: reference_multi_head_attention(
                 x, q, k, v, o, 1, mask)),
     Mistake("pass the mask to the attention of every head",
             lambda x, q, k, v, o, h, mask=None: reference_multi_head_attention(
                 x, q, k, v, o, h))],
    hint="project with query/key/value, split into heads, scaled_dot_product_attention, merge "
         "the heads, then the output projection")


# ----------------------------------------------------------------------------------------------
# Chapter 5: the encoder


def reference_feed_forward(x, dense_in, dense_out):
    return dense_out(F.gelu(dense_in(x)))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


def feed_forward_cases():
    def dense(n_in, n_out):  # weights large enough that GELU's shape matters
        layer = nn.Linear(n_in, n_out)
        nn.init.normal_(layer.weight, std=1.0)
        return layer
    return [Case("(2, 3, 4) -> 16 -> 4", (randn(2, 3, 4), dense(4, 16), dense(16, 4))),
            Case("batch of 1", (randn(1, 5, 6), dense(6, 24), dense(24, 6)))]


feed_forward = Exercise(
    "feed_forward", reference_feed_forward, feed_forward_cases,
    [Mistake("BERT uses GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)), not ReLU",
             lambda x, a, b: b(F.relu(a(x)))),
     Mistake("use the exact GELU with erf, not the tanh approximation",
             lambda x, a, b: b(F.gelu(a(x), approximate="tanh"))),
     Mistake("put GELU between the two linear layers",
             lambda x, a, b: b(a(x))),
     Mistake("GELU goes only after the first linear layer, not after the second",
             lambda x, a, b: F.gelu(b(F.gelu(a(x)))))],
    hint="dense_out(gelu(dense_in(x))), with the exact GELU 0.5·x·(1 + erf(x/√2))")


def parts_only(layer: BertLayer) -> BertLayer:
    """The layer with its own forward switched off, so an answer has to wire the parts."""
    def refuse(*args, **kwargs):
        raise RuntimeError("build the layer from its parts; don't call layer(x) itself")
    layer.forward = refuse
    return layer


def wire_layer(x, layer, mask=None, residual=True, pre_ln=False):
    """An encoder layer wired from its parts, the way a flag says (for the mistakes)."""
    attention, ffn_out = layer.attention.output, layer.output
    r = x if residual else 0
    if pre_ln:
        x = x + attention.dense(layer.attention.self(attention.LayerNorm(x), mask)[0])
        return x + ffn_out.dense(layer.intermediate(ffn_out.LayerNorm(x)))
    x = attention.LayerNorm(r + attention.dense(layer.attention.self(x, mask)[0]))
    r = x if residual else 0
    return ffn_out.LayerNorm(r + ffn_out.dense(layer.intermediate(x)))


def encoder_layer_cases():
    config = BertConfig(vocab_size=10, hidden_size=8, num_attention_heads=2, intermediate_size=16)
    def layer():
        return parts_only(BertLayer(config).eval())
    mask = heads_padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    return [Case("batch of 2, no mask", (randn(2, 5, 8), layer())),
            Case("with a padding mask", (randn(2, 5, 8), layer(), mask)),
            Case("batch of 1", (randn(1, 3, 8), layer()))]


encoder_layer = Exercise(
    "encoder_layer", lambda x, layer, mask=None: BertLayer.forward(layer, x, mask)[0],
    encoder_layer_cases,
    [Mistake("BERT is post-LN: LayerNorm(x + sublayer(x)), not x + sublayer(LayerNorm(x))",
             lambda x, layer, mask=None: wire_layer(x, layer, mask, pre_ln=True)),
     Mistake("add the residual: each LayerNorm normalizes x + sublayer(x), not sublayer(x)",
             lambda x, layer, mask=None: wire_layer(x, layer, mask, residual=False)),
     Mistake("pass the mask to the attention",
             lambda x, layer, mask=None: wire_layer(x, layer))],
    hint="a = LN1(x + dense1(attention(x, mask))); out = LN2(a + dense2(intermediate(a))): "
         "layer.attention.self, .attention.output.{dense, LayerNorm}, .intermediate, "
         ".output.{dense, LayerNorm}")


def parameter_formula(config, biases=True, pooler=True, norms=True, positions=True, ffn=True):
    """BERT's parameter count with one part left out (for the mistakes)."""
    C, M, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers  # M: FFN width
    b, n = int(biases), 2 * C * int(norms)
    extra = (config.max_position_embeddings + config.type_vocab_size) * C if positions else 0
    embeddings = config.vocab_size * C + extra + n
    layer = 4 * (C * C + b * C) + n + int(ffn) * (2 * C * M + b * (M + C)) + n
    return embeddings + L * layer + int(pooler) * (C * C + b * C)


def count_cases():
    return [Case(name, (config,)) for name, config in (
        ("tiny, vocabulary 100", BertConfig.tiny(vocab_size=100, max_position_embeddings=64)),
        ("3 layers, odd sizes", BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=3,
                                           num_attention_heads=3, intermediate_size=20,
                                           max_position_embeddings=16, type_vocab_size=3)),
        ("1 layer, 1 head", BertConfig(vocab_size=7, hidden_size=4, num_hidden_layers=1,
                                       num_attention_heads=1, intermediate_size=4,
                                       max_position_embeddings=5)))]


count_parameters = Exercise(
    "count_parameters", lambda config: BertModel(config).num_parameters(), count_cases,
    [Mistake("every nn.Linear has a bias as well as its weight: out_features more numbers",
             lambda c: parameter_formula(c, biases=False)),
     Mistake("BertModel ends with the pooler: one more C×C linear layer with its bias",
             lambda c: parameter_formula(c, pooler=False)),
     Mistake("each LayerNorm has a weight and a bias of C numbers: one after the embeddings, "
             "two per layer", lambda c: parameter_formula(c, norms=False)),
     Mistake("the embeddings include the position table (max_position_embeddings × C) and the "
             "segment table (type_vocab_size × C)",
             lambda c: parameter_formula(c, positions=False)),
     Mistake("each layer has a feed-forward network: C×I and I×C weights with their biases",
             lambda c: parameter_formula(c, ffn=False))],
    hint="embeddings (V + P + S)·C + LayerNorm; per layer 4 attention linears (C×C + C), "
         "LayerNorm, FFN (C×I + I + I×C + C), LayerNorm; the pooler C×C + C")


# ----------------------------------------------------------------------------------------------
# Chapter 6: pretraining data


SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")  # never chosen for prediction


def reference_choose_mask_positions(tokens, generator, rate=0.15, max_predictions=20):
    candidates = [i for i, token in enumerate(tokens) if token not in SPECIAL_TOKENS]
    n = min(max_predictions, max(1, round(rate * len(candidates))), len(candidates))
    order = torch.randperm(len(candidates), generator=generator)
    return sorted(candidates[i] for i in order[:n].tolist())


def wrong_positions(skip_special=True, count_all=False, rounding=round, shuffle=True,
                    ordered=True):
    """The reference with one step done wrong, chosen by the flags (for the mistakes)."""
    def choose(tokens, generator, rate=0.15, max_predictions=20):
        candidates = [i for i, token in enumerate(tokens)
                      if not (skip_special and token in SPECIAL_TOKENS)]
        base = len(tokens) if count_all else len(candidates)
        n = min(max_predictions, max(1, rounding(rate * base)), len(candidates))
        order = (torch.randperm(len(candidates), generator=generator).tolist() if shuffle
                 else range(len(candidates)))
        chosen = [candidates[i] for i in order[:n]]
        return sorted(chosen) if ordered else chosen
    return choose


def positions_cases():
    def sentence(n, pads=0):
        return ["[CLS]", *(f"w{i}" for i in range(n - 1)), "[SEP]", "b", "[SEP]"] + ["[PAD]"] * pads
    return [Case("10 words and 8 [PAD]", (sentence(10, pads=8), torch.Generator().manual_seed(1))),
            Case("17 words", (sentence(17), torch.Generator().manual_seed(2))),
            Case("3 words, rate=0.5", (sentence(3), torch.Generator().manual_seed(3)),
                 dict(rate=0.5)),
            Case("200 words: the cap", (sentence(200), torch.Generator().manual_seed(4)))]


choose_mask_positions = Exercise(
    "choose_mask_positions", reference_choose_mask_positions, positions_cases,
    [Mistake("[CLS], [SEP] and [PAD] are never chosen: only the other positions are candidates",
             wrong_positions(skip_special=False)),
     Mistake("count the candidates only: n = round(rate × len(candidates)), not of all tokens",
             wrong_positions(count_all=True)),
     Mistake("round to the nearest whole number (round), don't truncate (int)",
             wrong_positions(rounding=int)),
     Mistake("shuffle the candidates with torch.randperm(len(candidates), generator=generator) "
             "and take the first n", wrong_positions(shuffle=False)),
     Mistake("return the positions sorted", wrong_positions(ordered=False))],
    hint="candidates = non-special positions; n = min(max_predictions, max(1, round(rate × "
         "len(candidates)))); shuffle with torch.randperm(..., generator=generator); the first n, "
         "sorted")


def reference_mask_tokens(ids, positions, draws, random_ids, mask_id):
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)  # (T,), (T,)
    labels[positions] = ids[positions]
    inputs[positions] = torch.where(draws < 0.8, mask_id,
                                    torch.where(draws < 0.9, random_ids, ids[positions]))
    return inputs, labels


def mask_tokens_cases():
    ids = torch.randint(5, 100, (12,))
    positions = torch.tensor([1, 4, 6, 7, 9, 10])
    random_ids = torch.randint(100, 200, (6,))
    draws = torch.tensor([0.1, 0.85, 0.95, 0.8, 0.9, 0.5])
    return [Case("mask, random, keep and the boundaries 0.8, 0.9",
                 (ids, positions, draws, random_ids, 3)),
            Case("all [MASK]", (ids, positions[:3], torch.zeros(3), random_ids[:3], 4)),
            Case("one position, kept", (ids[:5], torch.tensor([2]), torch.tensor([0.99]),
                                        random_ids[:1], 3))]


def random_and_keep_swapped(ids, positions, draws, random_ids, mask_id):
    inputs, labels = reference_mask_tokens(ids, positions, draws, random_ids, mask_id)
    inputs[positions] = torch.where(draws < 0.8, mask_id,
                                    torch.where(draws < 0.9, ids[positions], random_ids))
    return inputs, labels


def labels_wrong(make_labels):
    def mask(ids, positions, draws, random_ids, mask_id):
        inputs, _ = reference_mask_tokens(ids, positions, draws, random_ids, mask_id)
        return inputs, make_labels(ids, inputs, positions)
    return mask


mask_tokens = Exercise(
    "mask_tokens", reference_mask_tokens, mask_tokens_cases,
    [Mistake("the labels are -100 (ignored) everywhere except at the chosen positions",
             labels_wrong(lambda ids, inputs, p: ids.clone())),
     Mistake("the label is the *original* token, the one the model must recover, not what "
             "replaced it", labels_wrong(
                 lambda ids, inputs, p: torch.full_like(ids, IGNORE_INDEX).index_put((p,),
                                                                                    inputs[p]))),
     Mistake("positions that are not predicted get the label -100, not 0", labels_wrong(
         lambda ids, inputs, p: torch.zeros_like(ids).index_put((p,), ids[p]))),
     Mistake("0.8 <= draw < 0.9 takes the random token, draw >= 0.9 keeps the original",
             random_and_keep_swapped),
     Mistake("the bounds are strict: [MASK] if draw < 0.8, random if draw < 0.9",
             lambda ids, p, d, r, m: reference_mask_tokens(ids, p, d - 1e-6, r, m))],
    hint="copy ids; at each chosen position i: draw < 0.8 -> mask_id, draw < 0.9 -> "
         "random_ids[i], else keep; labels = -100 except the original ids at the positions",
    returns=("input_ids", "labels"))


def reference_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    tokens_a, tokens_b = list(tokens_a), list(tokens_b)
    truncate_in_place(tokens_a, tokens_b, max_num_tokens, rng)
    return tokens_a, tokens_b


def truncate_wrong(pick_longer=None, from_end=None):
    def truncate(tokens_a, tokens_b, max_num_tokens, rng):
        a, b = list(tokens_a), list(tokens_b)
        while len(a) + len(b) > max_num_tokens:
            longer = (pick_longer or (lambda a, b: a if len(a) > len(b) else b))(a, b)
            del longer[-1 if from_end else 0 if rng.random() < 0.5 else -1]
        return a, b
    return truncate


def truncate_cases():
    a, b = list(range(10)), list(range(100, 104))
    return [Case("A much longer", (a, b, 8, random.Random(0))),
            Case("B longer", (b, a, 9, random.Random(1))),
            Case("equal lengths", (a[:5], b + [104], 7, random.Random(2))),
            Case("already short enough", (a[:3], b[:2], 5, random.Random(3)))]


truncate_seq_pair = Exercise(
    "truncate_seq_pair", reference_truncate_seq_pair, truncate_cases,
    [Mistake("an over-long pair is trimmed, never dropped (dropping it throws away data, the "
             "d2l slip)", lambda a, b, n, rng: None if len(a) + len(b) > n else (list(a),
                                                                                    list(b))),
     Mistake("when A and B are equally long, trim B (take A only if len(A) > len(B))",
             truncate_wrong(pick_longer=lambda a, b: a if len(a) >= len(b) else b)),
     Mistake("trim the longer of A and B each time, not A first",
             truncate_wrong(pick_longer=lambda a, b: a if a else b)),
     Mistake("remove from a random end: the front if rng.random() < 0.5, else the back",
             truncate_wrong(from_end=True))],
    hint="while len(a) + len(b) > max_num_tokens: longer = a if len(a) > len(b) else b; "
         "del longer[0 if rng.random() < 0.5 else -1]",
    returns=("tokens_a", "tokens_b"))


# ----------------------------------------------------------------------------------------------
# Chapter 7: pretraining


def reference_masked_lm_loss(logits, labels):  # (B, T, V), (B, T) -> ()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def per_token_loss(logits, labels):  # (B, T): the loss at each position, 0 where ignored
    return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                           reduction="none")


def masked_lm_cases():
    def labels(B, T, V, positions):
        y = torch.full((B, T), IGNORE_INDEX)
        for b, t in positions:
            y[b, t] = torch.randint(V, ()).item()
        return y
    return [Case("batch of 2, 3 and 1 labels", (randn(2, 6, 11),
                                                labels(2, 6, 11, [(0, 1), (0, 3), (0, 4),
                                                                  (1, 2)]))),
            Case("batch of 1, one label", (randn(1, 5, 7), labels(1, 5, 7, [(0, 2)]))),
            Case("every position labelled", (randn(2, 3, 5), torch.randint(5, (2, 3))))]


masked_lm_loss = Exercise(
    "masked_lm_loss", reference_masked_lm_loss, masked_lm_cases,
    [Mistake("you averaged over *every* position, so the loss shrinks with the share of "
             "masked tokens (the d2l slip: 0/1 weights, then a mean over all positions); divide "
             "by the number of labelled positions", lambda x, y: per_token_loss(x, y).mean()),
     Mistake("average over the labelled positions, don't sum",
             lambda x, y: per_token_loss(x, y).sum()),
     Mistake("average over all labelled tokens of the batch, not per sequence then over "
             "sequences", lambda x, y: (per_token_loss(x, y).sum(1)
                                        / (y != IGNORE_INDEX).sum(1)).mean())],
    hint="cross-entropy over the (B·T, V) logits with ignore_index=-100: the mean over the "
         "labelled positions only")


nsp_loss = Exercise(
    "nsp_loss", lambda logits, is_next: F.cross_entropy(logits, (~is_next).long()),
    lambda: [Case("batch of 4", (randn(4, 2), torch.tensor([True, False, False, True]))),
             Case("batch of 1, NotNext", (randn(1, 2), torch.tensor([False]))),
             Case("all IsNext", (randn(3, 2), torch.ones(3, dtype=torch.bool)))],
    [Mistake("label 0 is IsNext and 1 is NotNext (BERT's convention): labels = (~is_next).long()",
             lambda x, is_next: F.cross_entropy(x, is_next.long())),
     Mistake("average over the batch, don't sum",
             lambda x, is_next: F.cross_entropy(x, (~is_next).long(), reduction="sum")),
     Mistake("cross_entropy takes the raw logits: it applies the softmax itself",
             lambda x, is_next: F.cross_entropy(x.softmax(-1), (~is_next).long()))],
    hint="F.cross_entropy(logits, labels) with labels 0 for IsNext, 1 for NotNext")


def lr_cases():
    peak, warmup, total = 1e-3, 10, 100
    return ([Case(f"step {s} (warmup 10, total 100)", (s, peak, warmup, total))
             for s in (0, 4, 9, 10, 55, 99)]
            + [Case("no warmup, step 0", (0, 5e-4, 0, 20))])


lr_at = Exercise(
    "lr_at", reference_lr_at, lr_cases,
    [Mistake("step counts from 0, and update 0 already gets lr·1/(warmup_steps + 1)",
             lambda s, lr, w, t: lr * s / w if s < w else reference_lr_at(s, lr, w, t)),
     Mistake("the decay runs over the steps after the warmup: (total - step) / (total - warmup)",
             lambda s, lr, w, t: reference_lr_at(s, lr, w, t) if s < w else lr * (t - s) / t),
     Mistake("after the warmup the rate decays linearly, it does not stay at the peak",
             lambda s, lr, w, t: reference_lr_at(s, lr, w, t) if s < w else lr)],
    hint="step < warmup_steps: lr·(step + 1)/(warmup_steps + 1); after: "
         "lr·(total_steps - step)/(total_steps - warmup_steps)")


# ----------------------------------------------------------------------------------------------
# Chapter 8: fine-tuning, classification


def pooler_cases():
    return [Case("batch of 2", (randn(2, 5, 6), nn.Linear(6, 6))),
            Case("batch of 1, one token", (randn(1, 1, 4), nn.Linear(4, 4)))]


pooler = Exercise(
    "pooler", lambda h, dense: torch.tanh(dense(h[:, 0])), pooler_cases,
    [Mistake("BERT's pooler reads the first token, [CLS], not the mean of all tokens",
             lambda h, dense: torch.tanh(dense(h.mean(1)))),
     Mistake("the first token, [CLS], is h[:, 0], not the last one",
             lambda h, dense: torch.tanh(dense(h[:, -1]))),
     Mistake("finish with tanh", lambda h, dense: dense(h[:, 0]))],
    hint="tanh(dense(hidden[:, 0])): the [CLS] vector through a linear layer and tanh")


def reference_mean_pool(hidden, attention_mask):  # (B, T, C), (B, T) -> (B, C)
    mask = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1)


mean_pool = Exercise(
    "mean_pool", reference_mean_pool,
    lambda: [Case("padding in one row", (randn(2, 4, 3), torch.tensor([[1, 1, 0, 0],
                                                                     [1, 1, 1, 1]]))),
             Case("batch of 1, no padding", (randn(1, 3, 5), torch.ones(1, 3, dtype=torch.long)))],
    [Mistake("leave the padding out of the mean: only positions where attention_mask is 1",
             lambda h, m: h.mean(1)),
     Mistake("divide by the number of real tokens, not by T",
             lambda h, m: (h * m[..., None]).sum(1) / h.size(1))],
    hint="sum the vectors where attention_mask is 1, divide by how many there are")


def reference_classification_head(pooled, weight, bias, labels=None):
    logits = pooled @ weight.T + bias  # (B, C) @ (C, K) -> (B, K)
    return logits, None if labels is None else F.cross_entropy(logits, labels)


classification_head = Exercise(
    "classification_head", reference_classification_head,
    lambda: [Case("batch of 4, 3 classes", (randn(4, 6), randn(3, 6), randn(3),
                                            torch.tensor([0, 2, 1, 2]))),
             Case("no labels", (randn(2, 6), randn(3, 6), randn(3))),
             Case("batch of 1, 2 classes", (randn(1, 4), randn(2, 4), randn(2),
                                            torch.tensor([1])))],
    [Mistake("cross_entropy takes the raw logits: it applies the softmax itself",
             lambda x, w, b, y=None: (x @ w.T + b, None if y is None else F.cross_entropy(
                 (x @ w.T + b).softmax(-1), y))),
     Mistake("average the loss over the batch, don't sum",
             lambda x, w, b, y=None: (x @ w.T + b, None if y is None else F.cross_entropy(
                 x @ w.T + b, y, reduction="sum"))),
     Mistake("add the bias", lambda x, w, b, y=None: reference_classification_head(
         x, w, torch.zeros_like(b), y))],
    hint="logits = pooled @ weight.T + bias (weight is (K, C) like nn.Linear's); loss = "
         "F.cross_entropy(logits, labels), or None without labels",
    returns=("logits", "loss"))


accuracy = Exercise(
    "accuracy", lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
    lambda: [Case("5 examples, 3 classes", (torch.tensor([[2.0, 1, 0], [0, 3, 1], [1, 0, 4],
                                                           [5, 0, 1], [0, 1, 0.5]]),
                                             torch.tensor([0, 1, 1, 1, 2]))),
             Case("one example, right", (torch.tensor([[0.1, 0.9]]), torch.tensor([1]))),
             Case("two classes, 4 examples", (randn(4, 2), torch.tensor([0, 1, 1, 0])))],
    [Mistake("return the fraction right (a float between 0 and 1), not the count",
             lambda x, y: (x.argmax(-1) == y).sum().item()),
     Mistake("the predicted class is the argmax over the classes (dim=-1)",
             lambda x, y: (x.argmin(-1) == y).float().mean().item())],
    hint="(logits.argmax(-1) == labels).float().mean().item()")


# ----------------------------------------------------------------------------------------------
# Chapter 9: pairs, tokens, spans


def reference_best_span(start_logits, end_logits, max_len):
    T = start_logits.size(0)
    scores = start_logits[:, None] + end_logits[None, :]  # (T, T): start i, end j
    allowed = torch.ones(T, T, dtype=torch.bool).triu().tril(max_len - 1)  # i <= j < i + max_len
    start, end = divmod(scores.masked_fill(~allowed, float("-inf")).argmax().item(), T)
    return start, end


def span_cases():
    s = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 3.0, 0.2, 0.1])
    e = torch.tensor([0.0, 0.1, 4.0, 0.3, 0.2, 0.1, 0.5, 2.0])
    return [Case("the best end comes before the best start", (s, e, 8)),
            Case("the longest answer too long", (s, e, 2)),
            Case("at most 3 tokens", (torch.tensor([2.0, 0, 0, 0, 0]),
                                      torch.tensor([0.0, 0, 1, 1.5, 0]), 3)),
            Case("at most 2 tokens", (torch.tensor([3.0, 0, 0, 0, 0, 0]),
                                      torch.tensor([0.0, 1, 2, 0, 0, 5]), 2)),
            Case("one token", (torch.tensor([1.0]), torch.tensor([2.0]), 30)),
            Case("random, T=20", (randn(20), randn(20), 5))]


best_span = Exercise(
    "best_span", reference_best_span, span_cases,
    [Mistake("taking the two argmaxes separately can end before it starts: search the pairs "
             "with start <= end", lambda s, e, n: (s.argmax().item(), e.argmax().item())),
     Mistake("limit the answer to max_len tokens: end - start + 1 <= max_len",
             lambda s, e, n: reference_best_span(s, e, s.size(0))),
     Mistake("max_len counts the tokens of the answer: end - start + 1 <= max_len (end - start "
             "< max_len)", lambda s, e, n: reference_best_span(s, e, n + 1)),
     Mistake("max_len counts the tokens of the answer: end - start + 1 <= max_len",
             lambda s, e, n: reference_best_span(s, e, max(n - 1, 1)))],
    hint="score(i, j) = start_logits[i] + end_logits[j] for i <= j <= i + max_len - 1; return "
         "the best (i, j) as two ints",
    returns=("start", "end"))


def read_bio(tags, flush=True, typed=True, stray_i=True, split_b=True):
    """BIO tags to (type, start, end) spans, with one rule broken by a flag (for the mistakes)."""
    spans, current = [], None  # current: (type, start)
    for i, tag in enumerate([*tags, "O"] if flush else tags):
        kind, _, label = tag.partition("-")
        continues = kind == "I" and current is not None and (label == current[0] or not typed)
        continues |= kind == "B" and current is not None and not split_b and label == current[0]
        if current is not None and not continues:
            spans.append((current[0], current[1], i))
            current = None
        if current is None and (kind == "B" or (kind == "I" and stray_i)):
            current = (label, i)
    return spans


def bio_cases():
    return [Case("two entities", (["B-PER", "I-PER", "O", "B-LOC"],)),
            Case("an entity at the end", (["O", "B-ORG", "I-ORG", "I-ORG"],)),
            Case("B-X B-X: two entities", (["B-PER", "B-PER", "O"],)),
            Case("I-LOC after B-PER starts a new entity", (["B-PER", "I-LOC", "O"],)),
            Case("an I- with nothing before it", (["O", "I-MISC", "I-MISC", "O"],)),
            Case("no entities", (["O", "O"],))]


bio_to_spans = Exercise(
    "bio_to_spans", lambda tags: read_bio(tags), bio_cases,
    [Mistake("the last entity is lost: close the one still open after the last tag",
             lambda tags: read_bio(tags, flush=False)),
     Mistake("an I- tag continues an entity only of the same type; I-LOC after B-PER starts a "
             "LOC entity", lambda tags: read_bio(tags, typed=False)),
     Mistake("an I-X that continues nothing starts an X entity (as the CoNLL scorer reads it)",
             lambda tags: read_bio(tags, stray_i=False)),
     Mistake("every B- starts a new entity, even right after one of the same type",
             lambda tags: read_bio(tags, split_b=False))],
    hint="walk the tags: B-X, or an I-X that does not continue an X entity, starts one; anything "
         "else but I-X closes it; return (type, start, end) with end exclusive")


def reference_entity_f1(gold, pred):
    gold = {(i, *span) for i, spans in enumerate(gold) for span in spans}
    pred = {(i, *span) for i, spans in enumerate(pred) for span in spans}
    correct = len(gold & pred)
    precision = correct / len(pred) if pred else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return precision, recall, f1


def macro_f1(gold, pred):
    scores = [reference_entity_f1([g], [p]) for g, p in zip(gold, pred)]
    return tuple(sum(s[k] for s in scores) / len(scores) for k in range(3))


def entity_cases():
    gold = [[("PER", 0, 2), ("LOC", 3, 4)], [("ORG", 1, 4)], [("PER", 0, 1)]]
    pred = [[("PER", 0, 2), ("LOC", 2, 4)], [("ORG", 1, 4), ("PER", 0, 1), ("LOC", 5, 6)], []]
    return [Case("three sentences", (gold, pred)),
            Case("a span right in the wrong sentence", ([[("PER", 0, 1)], []],
                                                        [[], [("PER", 0, 1)]])),
            Case("nothing predicted", ([[("LOC", 0, 1)]], [[]])),
            Case("all right", ([[("LOC", 0, 1)], [("PER", 2, 3)]],
                               [[("LOC", 0, 1)], [("PER", 2, 3)]]))]


entity_f1 = Exercise(
    "entity_f1", reference_entity_f1, entity_cases,
    [Mistake("count over all sentences together (micro average), not per sentence then averaged",
             macro_f1),
     Mistake("a predicted span is right only in its own sentence: key the spans by sentence",
             lambda g, p: reference_entity_f1([[s for ss in g for s in ss]],
                                              [[s for ss in p for s in ss]])),
     Mistake("precision = right / predicted, recall = right / gold",
             lambda g, p: tuple(reference_entity_f1(p, g))),
     Mistake("F1 is the harmonic mean, 2PR/(P+R), not the average",
             lambda g, p: (*reference_entity_f1(g, p)[:2], sum(reference_entity_f1(g, p)[:2])
                           / 2))],
    hint="a prediction counts when (sentence, type, start, end) is in the gold set; "
         "P = right/predicted, R = right/gold, F1 = 2PR/(P+R); 0.0 when there is nothing to "
         "divide by",
    returns=("precision", "recall", "f1"))


def toy_scorer(input_ids, attention_mask):  # (N, T), (N, T) -> (N,)
    """A stand-in for BERT + a linear layer: one number per sequence, position-dependent."""
    if input_ids.dim() != 2:
        raise ValueError(f"the scorer takes (N, T) tensors, got shape {tuple(input_ids.shape)}: "
                         "fold the choices into the batch first")
    weights = torch.arange(1, input_ids.size(1) + 1)  # (T,)
    return (input_ids * attention_mask * weights).sum(-1).float()


def choice_cases():
    def case(label, B, K, T):
        mask = torch.ones(B, K, T, dtype=torch.long)
        mask[..., T - 1] = 0
        return Case(label, (toy_scorer, torch.randint(1, 50, (B, K, T)), mask))
    return [case("2 questions, 3 choices", 2, 3, 4),
            case("1 question, 4 choices", 1, 4, 3),
            case("3 questions, 2 choices", 3, 2, 5)]


def reference_choice_logits(scorer, input_ids, attention_mask):
    B, K, T = input_ids.shape
    return scorer(input_ids.view(B * K, T), attention_mask.view(B * K, T)).view(B, K)


choice_logits = Exercise(
    "choice_logits", reference_choice_logits, choice_cases,
    [Mistake("view the scores back as (B, K): row b holds question b's K choices",
             lambda f, x, m: f(x.flatten(0, 1), m.flatten(0, 1))),
     Mistake("the scores come out in (B·K) order, question by question: view(B, K), not "
             "view(K, B).T", lambda f, x, m: f(x.flatten(0, 1), m.flatten(0, 1)).view(
                 x.size(1), x.size(0)).T),
     Mistake("fold (B, K, T) into (B·K, T) without reordering: choices of the same question "
             "stay together", lambda f, x, m: f(x.transpose(0, 1).flatten(0, 1),
                                                m.transpose(0, 1).flatten(0, 1)).view(
                                                    x.size(0), x.size(1)))],
    hint="input_ids.view(B * K, T) (and the mask), score them, then .view(B, K)")


# ----------------------------------------------------------------------------------------------
# Chapter 10: inside BERT


def reference_attention_entropy(weights):  # (B, H, Tq, Tk) -> (B, H)
    return -torch.special.xlogy(weights, weights).sum(-1).mean(-1)  # 0 log 0 = 0


def one_hot_rows():
    weights = probabilities(1, 2, 3, 3)
    weights[0, 0] = torch.eye(3)
    return weights


attention_entropy = Exercise(
    "attention_entropy", reference_attention_entropy,
    lambda: [Case("(2, 3, 4, 4)", (probabilities(2, 3, 4, 4),)),
             Case("one-hot rows (0 log 0)", (one_hot_rows(),)),
             Case("uniform rows, Tq=2 != Tk=5", (torch.full((1, 1, 2, 5), 0.2),))],
    [Mistake("0 · log 0 gives NaN in torch: count it as 0 (torch.special.xlogy(p, p) does)",
             lambda w: -(w * w.log()).sum(-1).mean(-1)),
     Mistake("use the natural log (nats), not log2",
             lambda w: reference_attention_entropy(w) / math.log(2)),
     Mistake("average over the queries, don't sum",
             lambda w: -torch.special.xlogy(w, w).sum(-1).sum(-1)),
     Mistake("each *row* (one query's weights over the keys) is a distribution: sum over dim=-1",
             lambda w: -torch.special.xlogy(w, w).sum(-2).mean(-1))],
    hint="H(row) = -Σ p log p over the keys (dim=-1), 0 log 0 = 0; then the mean over queries")


def reference_attention_to(weights, input_ids, token_id):  # (B, H, T, T), (B, T) -> (B, H)
    is_token = (input_ids == token_id).to(weights.dtype)  # (B, T)
    return (weights * is_token[:, None, None, :]).sum(-1).mean(-1)


def attention_to_cases():
    ids = torch.tensor([[101, 7, 8, 102, 9, 102], [101, 5, 102, 6, 6, 102]])
    return [Case("[SEP] twice in each sequence", (probabilities(2, 3, 6, 6), ids, 102)),
            Case("[CLS], batch of 1", (probabilities(1, 2, 6, 6), ids[:1], 101)),
            Case("a token that is not there", (probabilities(1, 2, 6, 6), ids[:1], 999))]


attention_to = Exercise(
    "attention_to", reference_attention_to, attention_to_cases,
    [Mistake("the token is a *key*: select the columns (last axis), not the query rows",
             lambda w, ids, t: (w * (ids == t).to(w.dtype)[:, None, :, None]).sum(-1).mean(-1)),
     Mistake("average over the queries, don't sum",
             lambda w, ids, t: (w * (ids == t).to(w.dtype)[:, None, None, :]).sum((-1, -2)))],
    hint="mask the keys holding token_id, sum each query's weights on them, mean over queries")


def reference_attention_rollout(attentions):  # L x (B, H, T, T) -> (B, T, T)
    rollout = None
    for weights in attentions:
        a = 0.5 * weights.mean(1) + 0.5 * torch.eye(weights.size(-1))  # (B, T, T), rows sum to 1
        rollout = a if rollout is None else a @ rollout
    return rollout


def rollout_wrong(heads=lambda w: w.mean(1), residual=0.5, backwards=False):
    def rollout(attentions):
        result = None
        for weights in attentions:
            a = (1 - residual) * heads(weights) + residual * torch.eye(weights.size(-1))
            result = a if result is None else (result @ a if backwards else a @ result)
        return result
    return rollout


def rollout_cases():
    return [Case("3 layers, batch of 2", ([probabilities(2, 2, 4, 4) for _ in range(3)],)),
            Case("one layer", ([probabilities(1, 3, 5, 5)],)),
            Case("2 layers, batch of 1", ((probabilities(1, 2, 3, 3),
                                            probabilities(1, 2, 3, 3)),))]


attention_rollout = Exercise(
    "attention_rollout", reference_attention_rollout, rollout_cases,
    [Mistake("multiply later layers on the left: rollout = A_layer @ rollout",
             rollout_wrong(backwards=True)),
     Mistake("account for the residual: A = 0.5·mean_heads(W) + 0.5·I",
             rollout_wrong(residual=0.0)),
     Mistake("average the heads (mean over dim 1), so each row still sums to 1",
             rollout_wrong(heads=lambda w: w.sum(1))),
     Mistake("average the heads (mean over dim 1), so each row still sums to 1",
             rollout_wrong(heads=lambda w: w.max(1).values))],
    hint="A_l = 0.5·W_l.mean(1) + 0.5·I for each layer; rollout = A_L @ ... @ A_2 @ A_1")


EXERCISES = {e.name: e for e in globals().values() if isinstance(e, Exercise)}
