"""The encoder: attention then a feed-forward network, each wrapped in a residual and a LayerNorm
(post-LN, as in the original BERT), stacked L times."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import MultiHeadSelfAttention
from .config import BertConfig

ACT = {
    "gelu": F.gelu,  # exact erf GELU, as BERT and Hugging Face's "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class AddNorm(nn.Module):
    """LayerNorm(residual + dropout(dense(x))): the 'Add & Norm' that closes each sublayer."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):  # x: (B, T, in_features), residual: (B, T, C) -> (B, T, C)
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Module):
    """Multi-head self-attention, its output projection, residual and LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = MultiHeadSelfAttention(config)  # Hugging Face's name: attention.self.*
        self.output = AddNorm(config.hidden_size, config)  # projection that merges the heads

    def forward(self, x, mask=None, output_attentions=False):
        context, weights = self.self(x, mask, output_attentions)  # (B, T, C)
        return self.output(context, x), weights


class Intermediate(nn.Module):
    """The first half of the feed-forward network: widen to intermediate_size, then GELU."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT[config.hidden_act]

    def forward(self, x):  # (B, T, C) -> (B, T, 4C)
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """One post-LN encoder layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config)  # second half of the FFN

    def forward(self, x, mask=None, output_attentions=False):
        x, weights = self.attention(x, mask, output_attentions)  # (B, T, C)
        return self.output(self.intermediate(x), x), weights


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.checkpointing = False  # recompute each layer in the backward pass: less memory

    def forward(self, x, mask=None, output_attentions=False):
        """x: (B, T, C) -> (B, T, C), and one (B, H, T, T) attention tensor per layer if asked."""
        attentions = []
        for layer in self.layer:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x, weights = checkpoint(layer, x, mask, output_attentions, use_reentrant=False)
            else:
                x, weights = layer(x, mask, output_attentions)
            attentions.append(weights)
        return x, (tuple(attentions) if output_attentions else None)
