"""Chapter 4: multi-head attention: the checks of exercises/04."""

from __future__ import annotations

import torch
from torch import nn, randn

from ... import attention
from ...attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from ...attention import scaled_dot_product_attention
from .framework import Answer, Case, Exercise, Mistake


def fused(x, weight, bias, num_heads, layout, order=None, transpose=True, add_bias=True,
          within=(3, "D")):
    """q, k, v from a fused projection (with one step changed by the keywords, for the
    mistakes): `order` forces one layout whatever `layout` says; `within` the order of a head's
    3·D rows in the "heads" layout."""
    B, T, C = x.shape
    H, D = num_heads, C // num_heads
    qkv = x @ weight.T + (bias if add_bias else 0)  # (B, T, 3C)
    if (order or layout) == "blocks":  # [q | k | v], each C wide and split into heads inside
        parts = qkv.view(B, T, 3, H, D).permute(2, 0, 1, 3, 4)  # (3, B, T, H, D)
    elif within == (3, "D"):  # head by head: [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], each D wide
        parts = qkv.view(B, T, H, 3, D).permute(3, 0, 1, 2, 4)  # (3, B, T, H, D)
    else:  # a head's rows read D-major: q, k, v interleaved feature by feature
        parts = qkv.view(B, T, H, D, 3).permute(4, 0, 1, 2, 3)  # (3, B, T, H, D)
    return tuple(p.transpose(1, 2) if transpose else p for p in parts)  # (B, H, T, D) each


def reference_qkv_heads(x, weight, bias, num_heads, layout):
    return fused(x, weight, bias, num_heads, layout)


def qkv_cases():
    def projection(C):  # a fused nn.Linear(C, 3C)'s weight and bias
        return randn(3 * C, C) / C**0.5, randn(3 * C)
    return [Case("(2, 5, 12), 3 heads, blocks", (randn(2, 5, 12), *projection(12), 3, "blocks")),
            Case("(2, 5, 12), 3 heads, heads", (randn(2, 5, 12), *projection(12), 3, "heads")),
            Case("batch of 1, 2 heads, heads", (randn(1, 4, 8), *projection(8), 2, "heads")),
            Case("batch of 1, 4 heads, blocks", (randn(1, 3, 8), *projection(8), 4, "blocks")),
            Case("one head: the two layouts agree", (randn(2, 3, 4), *projection(4), 1, "heads")),
            Case("as many heads as features, heads", (randn(2, 3, 6), *projection(6), 6,
                                                      "heads"))]


def qkv_mistake(**change):
    return lambda x, w, b, h, layout: fused(x, w, b, h, layout, **change)


qkv_heads = Exercise(
    "qkv_heads", reference_qkv_heads, qkv_cases,
    [Mistake("with layout='heads' the 3C outputs go head by head, 3·D per head: view them as "
             "(B, T, H, 3, D); only layout='blocks' is [all of q | all of k | all of v]",
             qkv_mistake(order="blocks")),
     Mistake("with layout='blocks' the first C outputs are all of q, the next C all of k, the "
             "last C all of v: view as (B, T, 3, H, D); (B, T, H, 3, D) is layout='heads'",
             qkv_mistake(order="heads")),
     Mistake("within a head's 3·D outputs the D query features come first, then D key, then D "
             "value: (H, 3, D), not (H, D, 3)", qkv_mistake(within=("D", 3))),
     Mistake("move the head axis in front of the tokens: each of q, k, v is (B, H, T, D), not "
             "(B, T, H, D)", qkv_mistake(transpose=False)),
     Mistake("the fused projection has a bias too: x @ weight.T + bias",
             qkv_mistake(add_bias=False))],
    hint="qkv = x @ weight.T + bias, (B, T, 3C); 'blocks': view (B, T, 3, H, D); 'heads': view "
         "(B, T, H, 3, D); pick q, k, v along the axis of size 3 and transpose each to "
         "(B, H, T, D)",
    returns=("q", "k", "v"),
    forbidden=("bertlab.attention.split_heads",
               "bertlab.attention.MultiHeadSelfAttention.split_heads"))


def pruned(heads, output, keep, invert=False, after=False, tiled=False, rescale=False,
           bias=True):
    """The output projection of the heads that `keep` keeps (with one step changed by the
    keywords, for the mistakes)."""
    B, H, T, D = heads.shape
    keep = ~keep if invert else keep
    if rescale:  # like dropout: the kept heads scaled up by H / (number kept)
        heads = heads * (H / keep.sum().clamp(min=1))
    if tiled or after:
        features = keep.repeat(D) if tiled else keep.repeat_interleave(D)  # (C,)
        merged = attention.merge_heads(heads)  # (B, T, C)
        if after:
            return output(merged) * features
        return output(merged * features)
    merged = attention.merge_heads(heads * keep[:, None, None])  # (B, T, C), pruned heads 0
    return output(merged) if bias else merged @ output.weight.T


def reference_prune_heads(heads, output, keep):
    return pruned(heads, output, keep)


def prune_cases():
    def case(label, B, H, T, D, keep):
        return Case(label, (randn(B, H, T, D), nn.Linear(H * D, H * D), torch.tensor(keep)))
    return [case("(2, 3, 5, 4), head 1 pruned", 2, 3, 5, 4, [True, False, True]),
            case("4 heads, two pruned", 1, 4, 3, 2, [False, True, True, False]),
            case("nothing pruned", 2, 2, 3, 3, [True, True]),
            case("every head pruned: only the bias is left", 2, 3, 4, 2, [False, False, False]),
            case("one head, kept", 1, 1, 3, 4, [True])]


def prune_mistake(**change):
    return lambda heads, output, keep: pruned(heads, output, keep, **change)


prune_heads = Exercise(
    "prune_heads", reference_prune_heads, prune_cases,
    [Mistake("keep[h] is True for the heads that stay: zero the heads where keep is False",
             prune_mistake(invert=True)),
     Mistake("zero the heads before the output projection: after it, every feature is a mix of "
             "all the heads", prune_mistake(after=True)),
     Mistake("in the merged vector head h holds the consecutive features h·D … (h+1)·D - 1: "
             "keep.repeat_interleave(D), not keep.repeat(D)", prune_mistake(tiled=True)),
     Mistake("pruning does not rescale the heads that are left (that is dropout, in training): "
             "just zero the pruned ones", prune_mistake(rescale=True)),
     Mistake("finish with the whole output projection, bias included: output(merged)",
             prune_mistake(bias=False))],
    hint="zero the pruned heads, heads * keep[:, None, None] (B, H, T, D); merge_heads; then "
         "output(...)")


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
