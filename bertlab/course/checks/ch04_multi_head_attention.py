"""Chapter 4: multi-head attention: the checks of exercises/04."""

from __future__ import annotations

import torch
from torch import nn, randn

from ... import attention
from ...attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from ...attention import scaled_dot_product_attention
from .framework import Answer, Case, Exercise, Mistake

split_heads = Exercise(
    "split_heads", attention.split_heads,
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
    "merge_heads", attention.merge_heads,
    lambda: [Case("(2, 3, 5, 4)", (randn(2, 3, 5, 4),)),
             Case("batch of 1", (randn(1, 2, 3, 4),)),
             Case("one head", (randn(2, 1, 3, 4),))],
    [Mistake("transpose(1, 2) back to (B, T, H, D) before the reshape, or the heads get mixed "
             "across tokens", lambda x: x.reshape(x.size(0), x.size(2), -1)),
     Mistake("heads go one after another: (B, T, H, D) -> (B, T, H*D), not D-major",
             lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), x.size(2), -1))],
    hint="x.transpose(1, 2).reshape(B, T, H * D) (reshape, not view: after transpose the memory "
         "is not contiguous)")


def grouped(x, query, key, value, output, num_heads, num_kv_heads, mask=None, tile=False,
            project=True, use_mask=True):
    """Grouped-query attention (with one step changed by the keywords, for the mistakes)."""
    B, T, C = x.shape
    D = C // num_heads
    q = attention.split_heads(query(x), num_heads)  # (B, H, T, D)
    k, v = (f(x).view(B, T, num_kv_heads, D).transpose(1, 2) for f in (key, value))  # (B, G, T, D)
    group = num_heads // num_kv_heads
    if tile:  # kv head g serves query heads g, g + G, g + 2G, ...
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:  # kv head g serves query heads g·group .. (g + 1)·group - 1
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, T, D)
    context, _ = scaled_dot_product_attention(q, k, v, mask if use_mask else None)  # (B, H, T, D)
    merged = attention.merge_heads(context)  # (B, T, C)
    return output(merged) if project else merged


def reference_grouped_query_attention(x, query, key, value, output, num_heads, num_kv_heads,
                                      mask=None):
    return grouped(x, query, key, value, output, num_heads, num_kv_heads, mask)


def grouped_cases():
    def projections(C, H, G):
        kv = C // H * G
        return nn.Linear(C, C), nn.Linear(C, kv), nn.Linear(C, kv), nn.Linear(C, C)
    mask = heads_padding_mask(torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]))
    return [Case("(2, 5, 12), 6 heads, 2 kv heads", (randn(2, 5, 12), *projections(12, 6, 2),
                                                     6, 2)),
            Case("with a padding mask, 4 heads, 2 kv heads",
                 (randn(2, 5, 16), *projections(16, 4, 2), 4, 2, mask)),
            Case("multi-query: 4 heads, 1 kv head", (randn(1, 3, 8), *projections(8, 4, 1), 4, 1)),
            Case("as many kv heads as heads: multi-head", (randn(2, 4, 12),
                                                           *projections(12, 3, 3), 3, 3))]


def mistake(**change):
    return lambda x, q, k, v, o, h, g, mask=None: grouped(x, q, k, v, o, h, g, mask, **change)


grouped_query_attention = Exercise(
    "grouped_query_attention", reference_grouped_query_attention, grouped_cases,
    [Mistake("kv head g serves the *consecutive* query heads g·(H/G) .. (g+1)·(H/G) - 1: "
             "repeat_interleave(H // G, dim=1), not repeat (which cycles through the kv heads)",
             mistake(tile=True)),
     Mistake("finish with the output projection: output(merged heads)", mistake(project=False)),
     Mistake("pass the mask to the attention of every head", mistake(use_mask=False))],
    hint="q: split into num_heads heads (B, H, T, D); k, v: view as (B, T, G, D), transpose to "
         "(B, G, T, D), repeat_interleave(H // G, dim=1); attention; merge; output projection",
    forbidden=("bertlab.attention.MultiHeadSelfAttention.forward",))


def attention_parameters(C=768, H=12, G=4, biases=True, shared=True):
    kv = C // H * G if shared else C
    b = int(biases)
    return 2 * (C * C + b * C) + 2 * (C * kv + b * kv)


gqa_parameters = Answer(
    "gqa_parameters", lambda: attention_parameters(),
    hint="query and output stay C → C; key and value become C → G·D with D = C / H; each "
         "nn.Linear(i, o) has i·o weights and o biases",
    wrong=[Mistake("that is multi-head attention's count: with 4 kv heads, key and value map "
                   "C → 4·64 = 256", lambda: attention_parameters(shared=False)),
           Mistake("each nn.Linear has a bias of out_features numbers too",
                   lambda: attention_parameters(biases=False)),
           Mistake("only key and value shrink: query and the output projection stay C → C",
                   lambda: 4 * (768 * 256 + 256))])
