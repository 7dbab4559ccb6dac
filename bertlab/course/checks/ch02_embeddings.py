"""Chapter 2: embeddings: the checks of exercises/02."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import randn

from .framework import Answer, Case, Exercise, Mistake


def sinusoids(T, C, base=10000.0, swap=False, column_exponent=False, pair_exponent=False,
              halves=False, first=0, times=False):
    """The Transformer's fixed position table (T, C), computed in float64 (with one thing changed
    by the keywords, for the mistakes)."""
    t = torch.arange(first, first + T, dtype=torch.float64)[:, None]  # (T, 1)
    i = torch.arange(C // 2, dtype=torch.float64)  # (C/2,) the pair index
    even, odd = 2 * i / C, (2 * i + 1 if column_exponent else 2 * i) / C
    if pair_exponent:
        even = odd = i / C
    angle = (lambda e: t * base ** e) if times else (lambda e: t / base ** e)  # (T, C/2)
    sin, cos = angle(even).sin(), angle(odd).cos()
    if swap:
        sin, cos = angle(even).cos(), angle(odd).sin()
    if halves:
        return torch.cat([sin, cos], dim=1).float()
    return torch.stack([sin, cos], dim=-1).flatten(1).float()  # (T, C): sin, cos, sin, cos, ...


def reference_sinusoidal_positions(T, C, base=10000.0):  # -> (T, C) float32
    return sinusoids(T, C, base)


def sinusoid_cases():
    return [Case("T=6, C=8", (6, 8)),
            Case("one position (T=1): [0, 1, 0, 1]", (1, 4)),
            Case("C=2: one pair, frequency 1", (5, 2)),
            Case("T=40, C=16", (40, 16)),
            Case("base=100", (7, 6), dict(base=100.0))]


sinusoidal_positions = Exercise(
    "sinusoidal_positions", reference_sinusoidal_positions, sinusoid_cases,
    [Mistake("sin goes on the even entries (0, 2, 4, ...), cos on the odd ones: position 0 is "
             "[0, 1, 0, 1, ...]", lambda T, C, base=10000.0: sinusoids(T, C, base, swap=True)),
     Mistake("entries 2i and 2i + 1 share one frequency, 1 / base^(2i/C): the exponent is "
             "the even column's index 2i over C, for the cos too, not the column's own index",
             lambda T, C, base=10000.0: sinusoids(T, C, base, column_exponent=True)),
     Mistake("the exponent is 2i/C, with i the pair (0 .. C/2 - 1): twice the pair index, "
             "not i/C", lambda T, C, base=10000.0: sinusoids(T, C, base, pair_exponent=True)),
     Mistake("interleave them: entry 2i is a sin and entry 2i + 1 the cos of the same "
             "frequency, not all the sines first and then all the cosines",
             lambda T, C, base=10000.0: sinusoids(T, C, base, halves=True)),
     Mistake("positions count from 0: the first row is position t = 0",
             lambda T, C, base=10000.0: sinusoids(T, C, base, first=1)),
     Mistake("divide t by base^(2i/C): the frequencies fall from 1 down to about 1/base, "
             "they do not grow", lambda T, C, base=10000.0: sinusoids(T, C, base, times=True)),
     Mistake("use the `base` argument instead of a fixed 10000",
             lambda T, C, base=10000.0: sinusoids(T, C))],
    hint="angle[t, i] = t / base^(2i/C) for t = 0..T-1 and i = 0..C/2-1; entry (t, 2i) = "
         "sin(angle), entry (t, 2i + 1) = cos(angle); a (T, C) float tensor")


def offset_similarities(P, max_offset, dot=False, anchored=False, over_T=False, first=0,
                        columns=False, wrap=False):
    """The mean cosine of the pairs of rows k apart, k = first..max_offset (with one thing changed
    by the keywords, for the mistakes)."""
    T = P.size(0)
    unit = P if dot else F.normalize(P, dim=0 if columns else -1)
    means = []
    for k in range(first, max_offset + 1):
        if wrap:
            cos = (unit * unit.roll(-k, dims=0)).sum(-1)  # (T,): pairs (t, t + k mod T)
        else:
            cos = (unit[:T - k] * unit[k:]).sum(-1)  # (T - k,): pairs (t, t + k)
        means.append(cos[:1].mean() if anchored else cos.sum() / T if over_T else cos.mean())
    return torch.stack(means) if means else torch.zeros(0)


def reference_similarity_by_offset(P, max_offset):  # (T, C), K -> (K + 1,)
    return offset_similarities(P, max_offset)


def lengths_vary(T, C):
    return randn(T, C) * (0.2 + 3 * torch.rand(T, 1))  # rows of very different lengths


def offset_cases():
    return [Case("T=8, offsets 0..3", (lengths_vary(8, 5), 3)),
            Case("max_offset = T - 1: one pair at the last offset", (lengths_vary(5, 4), 4)),
            Case("max_offset = 0", (lengths_vary(3, 6), 0)),
            Case("a (20, 16) table, offsets 0..6", (lengths_vary(20, 16), 6))]


similarity_by_offset = Exercise(
    "similarity_by_offset", reference_similarity_by_offset, offset_cases,
    [Mistake("that is the mean dot product: the cosine divides each pair's dot product by the "
             "two rows' lengths (these rows are of different lengths)",
             lambda P, K: offset_similarities(P, K, dot=True)),
     Mistake("average over every pair k apart, (t, t + k) for t = 0 .. T-1-k, not only the pair "
             "that starts at position 0", lambda P, K: offset_similarities(P, K, anchored=True)),
     Mistake("at offset k there are T - k pairs: take their mean (divide by T - k, not by T)",
             lambda P, K: offset_similarities(P, K, over_T=True)),
     Mistake("start at offset 0 (each position with itself, cosine 1): return max_offset + 1 "
             "values, for k = 0, 1, ..., max_offset", lambda P, K: offset_similarities(P, K,
                                                                                     first=1)),
     Mistake("the pairs stop at the end of the table: t + k < T, no wrapping around to the "
             "start (torch.roll does)", lambda P, K: offset_similarities(P, K, wrap=True)),
     Mistake("normalize each row (a position's vector, over dim=-1), not each column",
             lambda P, K: offset_similarities(P, K, columns=True))],
    hint="for k = 0..max_offset: the cosines of rows P[t] and P[t + k] for t = 0..T-1-k "
         "(P[:T - k] against P[k:], row by row), then their mean; a (max_offset + 1,) tensor")


def rms(x, weight, eps=1e-6, center=False, std=False, outside=False, root=True, total=False,
        everything=False, scale=True, fixed=None):
    """RMSNorm (with one thing changed by the keywords, for the mistakes)."""
    eps = eps if fixed is None else fixed
    if center:
        x = x - x.mean(-1, keepdim=True)
    if std:
        square = x.var(-1, unbiased=False, keepdim=True)  # (..., 1)
    elif total:
        square = x.pow(2).sum(-1, keepdim=True)
    elif everything:
        square = x.pow(2).mean()  # one number for the whole tensor
    else:
        square = x.pow(2).mean(-1, keepdim=True)  # (..., 1): the mean square of each vector
    if outside:
        y = x / (square.sqrt() + eps)
    elif not root:
        y = x / (square + eps)
    else:
        y = x / (square + eps).sqrt()
    return y * weight if scale else y


def reference_rms_norm(x, weight, eps=1e-6):  # (..., C), (C,) -> (..., C)
    return rms(x, weight, eps)


def rms_cases():
    C = 8
    constant = torch.tensor([[2.0] * 4, [-0.5] * 4, [0.0] * 4, [1.0, -1.0, 1.0, -1.0]])
    return [Case("(2, 3, 8)", (3 * randn(2, 3, C) + 1, 1 + randn(C) / 4)),
            Case("a single vector (5,)", (randn(5), 1 + randn(5) / 4)),
            Case("constant rows, one of zeros", (constant, 1 + randn(4) / 4)),
            Case("tiny values, eps=1e-3", (1e-2 * randn(4, 6), 1 + randn(6) / 4),
                 dict(eps=1e-3))]


rms_norm = Exercise(
    "rms_norm", reference_rms_norm, rms_cases,
    [Mistake("RMSNorm does not subtract the mean (that is LayerNorm): divide x itself by its "
             "root mean square, so a constant row comes out as ±weight, not 0",
             lambda x, w, eps=1e-6: rms(x, w, eps, center=True)),
     Mistake("the root mean square is sqrt(mean(x²)), not the standard deviation: nothing is "
             "centred", lambda x, w, eps=1e-6: rms(x, w, eps, std=True)),
     Mistake("eps goes inside the square root: x / sqrt(mean(x²) + eps)",
             lambda x, w, eps=1e-6: rms(x, w, eps, outside=True)),
     Mistake("divide by the *root* of the mean square, sqrt(mean(x²) + eps), not by the mean "
             "square itself", lambda x, w, eps=1e-6: rms(x, w, eps, root=False)),
     Mistake("the *mean* of the squares, over the C features, not their sum (that is the "
             "length |x|, sqrt(C) times the root mean square)",
             lambda x, w, eps=1e-6: rms(x, w, eps, total=True)),
     Mistake("each token on its own: the mean of x² over the last axis (dim=-1, "
             "keepdim=True), not over the whole tensor",
             lambda x, w, eps=1e-6: rms(x, w, eps, everything=True)),
     Mistake("scale each feature by weight after normalizing",
             lambda x, w, eps=1e-6: rms(x, w, eps, scale=False)),
     Mistake("use the `eps` argument instead of a fixed 1e-6",
             lambda x, w, eps=1e-6: rms(x, w, fixed=1e-6))],
    hint="mean of x² over dim=-1 with keepdim=True, then x / sqrt(that + eps) * weight; no mean "
         "subtracted, no bias",
    forbidden=("torch.nn.functional.rms_norm", "torch.rms_norm",
               "torch.nn.functional.layer_norm", "torch.layer_norm",
               "torch.nn.functional.group_norm", "torch.nn.functional.batch_norm",
               "torch.nn.functional.instance_norm"))


def embedding_count(V=30_522, P=512, S=2, C=768, norm=True, positions=True):
    return (V + (P + S if positions else 0)) * C + 2 * C * int(norm)


embedding_parameters = Answer(
    "embedding_parameters", lambda: embedding_count(),
    hint="three tables of C = 768 columns, with V = 30,522, P = 512 and S = 2 rows, and a "
         "LayerNorm with a weight and a bias of C numbers each",
    wrong=[Mistake("the LayerNorm has parameters too: a weight and a bias of C numbers each",
                   lambda: embedding_count(norm=False)),
           Mistake("add the position table (512 × 768) and the segment table (2 × 768)",
                   lambda: embedding_count(positions=False)),
           Mistake("that is the word table alone", lambda: 30_522 * 768)])
