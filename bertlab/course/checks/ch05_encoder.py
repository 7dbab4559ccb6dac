"""Chapter 5: the encoder: the checks of exercises/05."""

from __future__ import annotations

import torch
from torch import randn

from ...attention import padding_mask as heads_padding_mask  # (B, T) -> (B, 1, 1, T)
from ...config import BertConfig
from ...encoder import BertLayer
from ...model import BertModel
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
         ".output.{dense, LayerNorm}",
    forbidden=("bertlab.encoder.BertLayer.forward", "bertlab.encoder.BertAttention.forward",
               "bertlab.encoder.AddNorm.forward", "bertlab.encoder.BertEncoder.forward",
               "torch.nn.TransformerEncoderLayer.forward"))


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
     Mistake("that is BERT's post-LN layer (section 1): pre-LN normalizes the input of each "
             "sublayer, x + sublayer(LN(x)), and never the sum",
             lambda x, layer, mask=None: wire_layer(x, layer, mask)),
     Mistake("pass the mask to the attention",
             lambda x, layer, mask=None: wire_layer(x, layer, pre_ln=True))],
    hint="a = x + dense1(attention(LN1(x), mask)); out = a + dense2(intermediate(LN2(a))), with "
         "LN1 = layer.attention.output.LayerNorm and LN2 = layer.output.LayerNorm",
    forbidden=("bertlab.encoder.BertLayer.forward", "bertlab.encoder.BertAttention.forward",
               "bertlab.encoder.AddNorm.forward", "bertlab.encoder.BertEncoder.forward",
               "torch.nn.TransformerEncoderLayer.forward"))


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
         "LayerNorm, FFN (C×I + I + I×C + C), LayerNorm; the pooler C×C + C",
    forbidden=("bertlab.model.BertPreTrainedModel.num_parameters",))


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
