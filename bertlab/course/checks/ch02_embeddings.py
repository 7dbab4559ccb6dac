"""Chapter 2: embeddings: the checks of exercises/02."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import randn

from .framework import Answer, Case, Exercise, Mistake


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
    hint="word[input_ids] + position[0..T-1] + segment[token_type_ids], shape (B, T, C)",
    forbidden=("bertlab.embeddings.BertEmbeddings.forward",))


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
             lambda x, w, b, eps=1e-12: (x - x.mean(-1, keepdim=True))
             / (x.var(-1, keepdim=True, unbiased=False) + eps).sqrt())],
    hint="normalize over the last axis (the C features of each token): mean and biased "
         "variance over dim=-1 with keepdim=True, then * weight + bias",
    forbidden=("torch.nn.functional.layer_norm", "torch.layer_norm",
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
