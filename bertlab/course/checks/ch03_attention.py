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


def reference_padding_mask(attention_mask):  # (B, T) -> (B, 1, T): the chapter's padding mask
    return heads_padding_mask(attention_mask)[:, 0]


def prefix_lm(attention_mask, segment_ids, keys_only=True, causal=True, bidirectional_a=True,
              padding=True, by_key=True):
    """UniLM's sequence-to-sequence mask (B, T, T), mask[b, i, j] for query i and key j: key j
    is a real token, and in A (segment 0) or not after i; the keywords plant the mistakes."""
    T = attention_mask.size(-1)
    position = torch.arange(T)
    earlier = position[None, :] <= position[:, None]  # (T, T): key j at or before query i
    segment = segment_ids[:, None, :] if by_key else segment_ids[:, :, None]  # key's (query's)
    allowed = ((segment == 0) if bidirectional_a else torch.zeros_like(segment, dtype=torch.bool))
    allowed = allowed | (earlier if causal else torch.ones(T, T, dtype=torch.bool))
    if padding:
        allowed = allowed & (attention_mask[:, None, :] == 1)
        if not keys_only:
            allowed = allowed & (attention_mask[:, :, None] == 1)
    return allowed.expand(attention_mask.size(0), T, T)


def reference_prefix_lm_mask(attention_mask, segment_ids):
    return prefix_lm(attention_mask, segment_ids)


def wrong_prefix_lm(**change):
    return lambda attention_mask, segment_ids: prefix_lm(attention_mask, segment_ids, **change)


def prefix_lm_cases():
    return [Case("a pair, and a shorter pair with padding",
                 (torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]]),
                  torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]]))),
            Case("one sentence (all segment 0), padded", (torch.tensor([[1, 1, 1, 0]]),
                                                          torch.tensor([[0, 0, 0, 0]]))),
            Case("B of one token, then padding", (torch.tensor([[1, 1, 1, 1, 0, 0]]),
                                                  torch.tensor([[0, 0, 0, 1, 0, 0]]))),
            Case("a fully padded row", (torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]),
                                        torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])))]


prefix_lm_mask = Exercise(
    "prefix_lm_mask", reference_prefix_lm_mask, prefix_lm_cases,
    [Mistake("return a bool tensor: True where query i may attend to key j",
             lambda m, s: prefix_lm(m, s).long()),
     Mistake("a padding key is hidden from every query, although its segment id is 0 like A's: "
             "combine the rule with attention_mask == 1 (on the keys)",
             wrong_prefix_lm(padding=False)),
     Mistake("A (segment 0) is read both ways: every query may see all of A's real tokens, also "
             "those after it; only B is left to right", wrong_prefix_lm(bidirectional_a=False)),
     Mistake("B is written left to right: a key in B is visible only to the queries at or after "
             "it (j <= i), so A's queries see none of B", wrong_prefix_lm(causal=False)),
     Mistake("rows are queries, columns keys: mask[b, i, j] says whether query i may attend to "
             "key j (your mask is transposed)", lambda m, s: prefix_lm(m, s).transpose(1, 2)),
     Mistake("it is the *key's* segment that counts: a key in A is visible to every query, a key "
             "in B only from its own position on", wrong_prefix_lm(by_key=False)),
     Mistake("mask the keys only: the row of a padding query follows the same rule (nobody reads "
             "it), as with chapter 3's padding mask", wrong_prefix_lm(keys_only=False))],
    hint="position = torch.arange(T); a (T, T) table `key j <= query i`, OR a (B, 1, T) "
         "`segment_ids == 0` of the keys, AND a (B, 1, T) `attention_mask == 1` of the keys: "
         "(B, T, T) bool", forbidden=("bertlab.attention.padding_mask",))


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
    causal_2d = torch.tril(torch.ones(5, 5, dtype=torch.bool))  # (T, T)
    causal_2d[2] = False  # query 2 may look at nothing
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
                                                              causal_pad)),
            Case("one sequence (T=5), a (T, T) mask with a fully masked row",
                 (randn(5, 4), randn(5, 4), randn(5, 2), randn(5), causal_2d)),
            Case("heads (B, H, T, d), mask=None given", (randn(2, 2, 4, 3), randn(2, 2, 4, 3),
                                                         randn(2, 2, 4, 3), randn(3), None))]


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
