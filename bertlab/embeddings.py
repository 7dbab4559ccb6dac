"""Embeddings: a token's vector is the sum of what it is, where it is, and which segment."""

from __future__ import annotations

import torch
from torch import nn

from .config import BertConfig


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        """input_ids, token_type_ids: (B, T) -> (B, T, C)."""
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        x = (self.word_embeddings(input_ids)            # (B, T, C)
             + self.position_embeddings(positions)      # (T, C), broadcast over the batch
             + self.token_type_embeddings(token_type_ids))  # (B, T, C)
        return self.dropout(self.LayerNorm(x))
