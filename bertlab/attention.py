"""Attention: scaled dot-product attention written out, and multi-head self-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v, written out so every step can be looked at.

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv).
    mask: optional bool tensor broadcastable to (..., Tq, Tk); True where a query may attend.
    Returns (output (..., Tq, dv), weights (..., Tq, Tk)).
    """
    weights = attention_weights(q, k, mask)  # (..., Tq, Tk)
    return weights @ v, weights


def attention_weights(q, k, mask=None):
    """softmax(q k^T / sqrt(d)): (..., Tq, d), (..., Tk, d) -> (..., Tq, Tk), each row sums to 1."""
    scores = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) of 1 = token, 0 = padding -> (B, 1, 1, T) bool, True where a key may be attended."""
    return attention_mask.bool()[:, None, None, :]


def split_heads(x, num_heads: int):  # (B, T, C) -> (B, H, T, C/H)
    """Head h gets the consecutive features h*C/H ... (h+1)*C/H - 1 of every token."""
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x):  # (B, H, T, C/H) -> (B, T, C)
    """The heads side by side again: split_heads undone."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


class MultiHeadSelfAttention(nn.Module):
    """Every token asks (query) every token (key) for a mix of their values, in H heads at once.

    Parameter names follow Hugging Face (`attention.self.query` ...), so checkpoints load as is.
    The output projection that merges the heads is `attention.output.dense` (see encoder.py).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x):  # (B, T, C) -> (B, H, T, C/H)
        return split_heads(x, self.num_heads)

    merge_heads = staticmethod(merge_heads)  # (B, H, T, C/H) -> (B, T, C)

    def forward(self, x, mask=None, output_attentions=False):
        """x: (B, T, C); mask: bool (B, 1, 1, T) or (B, 1, T, T).
        Returns the merged heads (B, T, C) and the weights (B, H, T, T), or None if not asked."""
        q, k, v = (self.split_heads(f(x)) for f in (self.query, self.key, self.value))  # (B,H,T,D)
        if output_attentions:
            weights = attention_weights(q, k, mask)  # (B, H, T, T)
            out = self.dropout(weights) @ v  # (B, H, T, D)
        else:  # the fused kernel (flash / memory-efficient on GPU); same numbers, no weights
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            weights = None
        return self.merge_heads(out), weights  # (B, T, C)
