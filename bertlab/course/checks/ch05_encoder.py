"""Chapter 5: the encoder: the checks of exercises/05."""

from __future__ import annotations

import torch
from torch import randn

from ...attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from ...config import BertConfig
from ...encoder import BertLayer
from .framework import Answer, Case, Exercise, Mistake


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
    def layer():  # LayerNorms with weights of their own, so that mixing the two up shows
        made = BertLayer(config).eval()
        for norm in (made.attention.output.LayerNorm, made.output.LayerNorm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.5)
            torch.nn.init.normal_(norm.bias, 0.0, 0.5)
        return parts_only(made)
    mask = heads_padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    return [Case("batch of 2, no mask", (randn(2, 5, 8), layer())),
            Case("with a padding mask", (randn(2, 5, 8), layer(), mask)),
            Case("batch of 1", (randn(1, 3, 8), layer()))]


NOT_THE_LAYER = ("bertlab.encoder.BertLayer.forward", "bertlab.encoder.BertAttention.forward",
                 "bertlab.encoder.AddNorm.forward", "bertlab.encoder.BertEncoder.forward",
                 "torch.nn.TransformerEncoderLayer.forward")


def planted_bug(x, layer, mask=None, second_only=False):
    """The pre-LN layer of the exercise text: the residuals start from the normalized vector
    (with `second_only`, the first residual fixed and the second still wrong)."""
    attention, ffn_out = layer.attention.output, layer.output
    h = attention.LayerNorm(x)
    a = (x if second_only else h) + attention.dense(layer.attention.self(h, mask)[0])
    h = ffn_out.LayerNorm(a)
    return h + ffn_out.dense(layer.intermediate(h))


pre_ln_layer = Exercise(
    "pre_ln_layer", lambda x, layer, mask=None: wire_layer(x, layer, mask, pre_ln=True),
    encoder_layer_cases,
    [Mistake("this is the planted bug: the residual carries x itself, a = x + sublayer(LN(x)); "
             "only the sublayer's input is normalized", planted_bug),
     Mistake("the first residual is fixed; the second one too must add to a, not to LN(a)",
             lambda x, layer, mask=None: planted_bug(x, layer, mask, second_only=True)),
     Mistake("that is BERT's post-LN layer (chapter 5): pre-LN normalizes the input of each "
             "sublayer, x + sublayer(LN(x)), and never the sum",
             lambda x, layer, mask=None: wire_layer(x, layer, mask)),
     Mistake("pass the mask to the attention",
             lambda x, layer, mask=None: wire_layer(x, layer, pre_ln=True))],
    hint="a = x + dense1(attention(LN1(x), mask)); out = a + dense2(intermediate(LN2(a))), with "
         "LN1 = layer.attention.output.LayerNorm and LN2 = layer.output.LayerNorm",
    forbidden=NOT_THE_LAYER)


def parallel(x, layer, mask=None, norms=1, residual="x", sequential=False, outer=False,
             use_mask=True):
    """A parallel layer, x + Attn(LN(x)) + FFN(LN(x)), with one step changed by the keywords (for
    the mistakes): `norms=2` gives the FFN layer.output.LayerNorm; `residual` "h" adds LN(x) and
    "twice" adds x to each branch; `sequential` feeds the FFN LN(x + Attn(...)) (with its own
    LayerNorm if norms=2); `outer` normalizes the sum, LN(x + Attn(x) + FFN(x))."""
    attention, ffn_out = layer.attention.output, layer.output
    mask = mask if use_mask else None
    if outer:
        branch = attention.dense(layer.attention.self(x, mask)[0])
        return attention.LayerNorm(x + branch + ffn_out.dense(layer.intermediate(x)))
    h = attention.LayerNorm(x)
    a = attention.dense(layer.attention.self(h, mask)[0])  # (B, T, C)
    second = ffn_out.LayerNorm if norms == 2 else attention.LayerNorm
    g = second(x + a) if sequential else second(x) if norms == 2 else h
    f = ffn_out.dense(layer.intermediate(g))  # (B, T, C)
    start = {"x": x, "h": h, "twice": 2 * x}[residual]
    return start + a + f


def parallel_mistake(**change):
    return lambda x, layer, mask=None: parallel(x, layer, mask, **change)


parallel_layer = Exercise(
    "parallel_layer", lambda x, layer, mask=None: parallel(x, layer, mask), encoder_layer_cases,
    [Mistake("the two sublayers run side by side: the FFN reads the same LN(x) as the attention, "
             "not the sum x + attention", parallel_mistake(sequential=True)),
     Mistake("that is the pre-LN layer of section 1: in a parallel layer the FFN reads the same "
             "LN(x) as the attention, not LN2(x + attention)",
             parallel_mistake(sequential=True, norms=2)),
     Mistake("a parallel layer has one LayerNorm, layer.attention.output.LayerNorm, read by both "
             "sublayers; layer.output.LayerNorm goes unused", parallel_mistake(norms=2)),
     Mistake("the residual carries x itself: x + attention + FFN, with only the sublayers' "
             "input normalized", parallel_mistake(residual="h")),
     Mistake("add x once: out = x + attention branch + FFN branch, not (x + attention) + "
             "(x + FFN)", parallel_mistake(residual="twice")),
     Mistake("normalize the sublayers' input, not the sum: LN(x) goes into both sublayers and "
             "the sum is left alone", parallel_mistake(outer=True)),
     Mistake("pass the mask to the attention", parallel_mistake(use_mask=False))],
    hint="h = LN(x) with LN = layer.attention.output.LayerNorm; out = x + "
         "dense1(attention(h, mask)) + dense2(intermediate(h)), dense1 = "
         "layer.attention.output.dense, dense2 = layer.output.dense",
    forbidden=NOT_THE_LAYER)


def multiply_adds(config, T, attention=2, per_head=False, pooler="once", ffn=2, flops=False):
    """Multiply-adds of the matrix products of BertModel(config) on one sequence of T tokens
    (with one term changed by the keywords, for the mistakes): `attention` of the two T x T
    products counted, `per_head` counts them for one head only, `pooler` "none" (left out) or
    "every" token, `ffn` of the two feed-forward products counted, `flops` counts 2 per
    multiply-add."""
    C, M, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers  # M: FFN width
    width = C // config.num_attention_heads if per_head else C  # H heads x T·T·D each = T·T·C
    layer = 4 * T * C * C + attention * T * T * width + ffn * T * C * M
    total = L * layer + {"none": 0, "once": C * C, "every": T * C * C}[pooler]
    return 2 * total if flops else total


def count_cases():
    return [Case(f"{name}, T = {T}", (config, T)) for name, config, T in (
        ("tiny", BertConfig.tiny(vocab_size=100, max_position_embeddings=64), 16),
        ("3 layers, odd sizes", BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=3,
                                           num_attention_heads=3, intermediate_size=20,
                                           max_position_embeddings=16, type_vocab_size=3), 7),
        ("1 layer, 2 heads", BertConfig(vocab_size=7, hidden_size=4, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=8,
                                        max_position_embeddings=5), 5),
        ("one token", BertConfig.tiny(vocab_size=100, max_position_embeddings=64), 1))]


def count_mistake(**change):
    return lambda config, T: multiply_adds(config, T, **change)


count_multiply_adds = Exercise(
    "count_multiply_adds", multiply_adds, count_cases,
    [Mistake("attention has two matrix products of its own besides the four projections: the "
             "scores q @ kᵀ and weights @ v, T·T·C multiply-adds each over all the heads",
             count_mistake(attention=0)),
     Mistake("weights @ v is a second T x T product, as large as the scores q @ kᵀ: 2·T·T·C in "
             "all", count_mistake(attention=1)),
     Mistake("every head has its own T x T scores: H heads of T·T·D make T·T·C, not T·T·D",
             count_mistake(per_head=True)),
     Mistake("the feed-forward network has two products: C → M and M → C, T·C·M each",
             count_mistake(ffn=1)),
     Mistake("the pooler reads only [CLS]: one vector through a C x C linear, C·C multiply-adds",
             count_mistake(pooler="every")),
     Mistake("BertModel ends with the pooler: C·C more for the [CLS] vector",
             count_mistake(pooler="none")),
     Mistake("count multiply-adds, one per product term: a FLOP count (2 per multiply-add) is "
             "twice the answer", count_mistake(flops=True))],
    hint="write down every matrix product with its shapes, an (n, k) @ (k, m) one being n·k·m "
         "multiply-adds: per layer the four projections on T tokens, in each head the scores and "
         "weights @ v, the FFN's two products; then the pooler on [CLS]; return a Python int",
    exact=True)


def albert_count(E=128, bias=True, factorized=True):
    V, C = 30_000, 768
    return V * E + E * C + C * int(bias) if factorized else V * C


albert_word_parameters = Answer(
    "albert_word_parameters", lambda: albert_count(),
    hint="the table has V rows of E numbers; the projection is an nn.Linear(E, C): E·C weights "
         "and C biases",
    wrong=[Mistake("the projection nn.Linear(E, C) has a bias of C numbers too",
                   lambda: albert_count(bias=False)),
           Mistake("that is BERT's table, V × C: ALBERT's has V rows of E = 128 numbers, then "
                   "projects them to C", lambda: albert_count(factorized=False)),
           Mistake("that is the table alone: add the projection, E·C + C",
                   lambda: 30_000 * 128)])
