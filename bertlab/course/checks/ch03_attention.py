"""Chapter 3: attention: the checks of exercises/03."""

from __future__ import annotations

import torch
from torch import randn

from ...attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from .framework import Answer, Case, Exercise, Mistake


def softmax_cases():
    return [Case("a vector", (randn(5),)),
            Case("(3, 5) rows", (randn(3, 5),)),
            Case("(2, 3, 4)", (randn(2, 3, 4),)),
            Case("large scores", (torch.tensor([[1000.0, 1001.0, 1002.0], [0.0, 0.0, -1000.0]]),)),
            Case("a -inf score (masked)", (torch.tensor([[0.0, float("-inf"), 1.0]]),))]


def safe_softmax(x, dim=-1):
    e = (x - x.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim=dim, keepdim=True)


softmax = Exercise(
    "softmax", lambda x: safe_softmax(x), softmax_cases,
    [Mistake("subtract each row's max before exp(): exp(1000) overflows to inf, and inf/inf is "
             "NaN; the result is the same without the overflow",
             lambda x: x.exp() / x.exp().sum(-1, keepdim=True)),
     Mistake("softmax over the last axis (dim=-1): each row should sum to 1",
             lambda x: safe_softmax(x, dim=0)),
     Mistake("divide by the sum over each row (keepdim=True), not over the whole tensor",
             lambda x: (x - x.max()).exp() / (x - x.max()).exp().sum())],
    hint="exp(x - max) / sum(exp(x - max)), max and sum over dim=-1 with keepdim=True",
    forbidden=("torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax",
               "torch.log_softmax", "torch.nn.functional.log_softmax"))


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


def relative_bias(T, bias, flip=False):  # (2R + 1,) -> (T, T): bias[clip(j - i, -R, R) + R]
    R = (bias.numel() - 1) // 2
    i = torch.arange(T)
    distance = (i[:, None] - i[None, :]) if flip else (i[None, :] - i[:, None])  # (T, T): j - i
    return bias[distance.clamp(-R, R) + R]


def reference_relative_attention(q, k, v, bias, mask=None, fill=None, scale=True, flip=False,
                                 use_mask=True):
    """Self-attention with a learned bias per clipped relative distance (with one thing changed
    by the keywords, for the mistakes)."""
    scores = q @ k.transpose(-2, -1) / (q.size(-1) ** 0.5 if scale else 1)  # (..., T, T)
    scores = scores + relative_bias(q.size(-2), bias, flip)  # (T, T) broadcasts
    if mask is not None and use_mask:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min if fill is None else fill)
    weights = safe_softmax(scores)  # (..., T, T)
    return weights @ v, weights  # (..., T, dv), (..., T, T)


def attention_cases():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    causal_pad = torch.tensor([[[True, False, False, False]] * 4])  # (1, 4, 4)
    causal_pad[0, 0] = False  # query 0 may look at nothing: a fully masked row
    return [Case("one sequence (T=4, d=8), R=1, no mask", (randn(4, 8), randn(4, 8), randn(4, 8),
                                                           randn(3))),
            Case("batch of 2, T=6 > R=2, d_v=3", (randn(2, 6, 8), randn(2, 6, 8), randn(2, 6, 3),
                                                  randn(5))),
            Case("R=0: one bias for every pair", (randn(2, 3, 4), randn(2, 3, 4), randn(2, 3, 4),
                                                  randn(1))),
            Case("padding mask (B, 1, T), R=4", (randn(2, 5, 8), randn(2, 5, 8), randn(2, 5, 8),
                                                 3 * randn(9), reference_padding_mask(mask))),
            Case("heads (B, H, T, d), mask (B, 1, 1, T)", (randn(2, 3, 5, 4), randn(2, 3, 5, 4),
                                                           randn(2, 3, 5, 4), randn(7),
                                                           heads_padding_mask(mask))),
            Case("a fully masked row (query 0 sees no key)", (randn(1, 4, 8), randn(1, 4, 8),
                                                              randn(1, 4, 8), randn(3),
                                                              causal_pad))]


relative_attention = Exercise(
    "relative_attention", reference_relative_attention, attention_cases,
    [Mistake("scale the scores q·k by 1/sqrt(d), d = q.size(-1), before adding the bias",
             lambda q, k, v, b, mask=None: reference_relative_attention(q, k, v, b, mask,
                                                                        scale=False)),
     Mistake("the distance is key minus query, j - i: bias[R + 1] is for the key just *after* "
             "the query", lambda q, k, v, b, mask=None: reference_relative_attention(
                 q, k, v, b, mask, flip=True)),
     Mistake("a fully masked row gives NaN with -inf (exp(-inf - (-inf))): fill with "
             "torch.finfo(scores.dtype).min, as chapter 3 does, so the row comes out uniform",
             lambda q, k, v, b, mask=None: reference_relative_attention(q, k, v, b, mask,
                                                                        fill=float("-inf"))),
     Mistake("the mask is ignored: where it is False set the score to torch.finfo(...).min "
             "before the softmax", lambda q, k, v, b, mask=None: reference_relative_attention(
                 q, k, v, b, mask, use_mask=False)),
     Mistake("the mask is upside down: True means 'may attend', so fill where ~mask",
             lambda q, k, v, b, mask=None: reference_relative_attention(
                 q, k, v, b, None if mask is None else ~mask))],
    hint="scores = q @ k.transpose(-2, -1) / sqrt(d) + bias[clamp(j - i, -R, R) + R] (a (T, T) "
         "table); masked_fill(~mask, torch.finfo(scores.dtype).min); softmax over the keys; "
         "return (weights @ v, weights)",
    returns=("output", "weights"),
    forbidden=("bertlab.attention.MultiHeadSelfAttention.forward",))


def worked_weights(scale=True, mask=True):
    """The weights of the worked example: q = (2, 2, 0, 0), keys (1, 1, 0, 0), (0, 0, 1, 1),
    (1, 0, 0, 0), the third key padding."""
    scores = torch.tensor([4.0, 0.0, 2.0]) / (2 if scale else 1)
    if mask:
        scores[2] = torch.finfo(scores.dtype).min
    return [round(w, 3) for w in scores.softmax(-1).tolist()]


worked_attention_weights = Answer(
    "worked_attention_weights", lambda: worked_weights(), tolerance=0.002,
    hint="score each key with q·k / sqrt(4), give the padding key weight 0, and softmax the "
         "other two scores: e^a / (e^a + e^b)",
    wrong=[Mistake("divide the dot products by sqrt(d) = 2 before the softmax",
                   lambda: worked_weights(scale=False)),
           Mistake("the third key is padding: its weight is 0, and the other two share all of it",
                   lambda: worked_weights(mask=False))])
