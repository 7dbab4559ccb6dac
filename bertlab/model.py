"""BertModel and its heads: pretraining (MLM + NSP), masked LM, and the fine-tuning heads.

Module names follow Hugging Face's BERT (`bert.embeddings`, `cls.predictions`, `classifier`, ...)
so that real checkpoints load with no renaming; see checkpoint.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import padding_mask
from .checkpoint import PretrainedMixin
from .config import IGNORE_INDEX, BertConfig
from .embeddings import BertEmbeddings
from .encoder import ACT, BertEncoder


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, C)
    pooler_output: torch.Tensor | None  # (B, C)
    attentions: tuple[torch.Tensor, ...] | None = None  # one (B, H, T, T) per layer


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # (B, T, V); with labels (N, V) at the N labelled positions,
    # or (B, P, V) at mlm_positions
    nsp_logits: torch.Tensor  # (B, 2): 0 = IsNext, 1 = NotNext
    loss: torch.Tensor | None = None  # mlm_loss + nsp_loss
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class HeadOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SpanOutput:
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)
    loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def check_inputs(config: BertConfig, input_ids, token_type_ids, attention_mask):
    """Turn bad input into a ValueError that says what is wrong, before torch fails obscurely.
    Shapes are checked always; values only on the CPU, where reading them costs no wait for an
    accelerator (the training loop checks each batch's values on the CPU before moving it)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a (batch, seq_len) tensor of token ids")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length {T} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}: truncate the input")
    for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {(B, T)} "
                             "like input_ids")
    if on_host(input_ids):
        check_values(config, input_ids, token_type_ids, attention_mask)


def on_host(t: torch.Tensor) -> bool:
    """Whether t's values can be read without waiting for a device (or breaking a graph)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def check_values(config: BertConfig, input_ids, token_type_ids=None, attention_mask=None):
    """Token ids inside the vocabulary, segment ids inside type_vocab_size, no empty row; the
    inputs are (B, T), or (B, K, T) for multiple choice."""
    if not input_ids.numel():
        return
    if input_ids.min() < 0 or input_ids.max() >= config.vocab_size:
        bad = input_ids[(input_ids < 0) | (input_ids >= config.vocab_size)][0].item()
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {config.vocab_size}): "
                         "was the input made with a different tokenizer?")
    if token_type_ids is not None and token_type_ids.max() >= config.type_vocab_size:
        raise ValueError(f"token_type_ids must be < type_vocab_size ({config.type_vocab_size})")
    if attention_mask is not None and not attention_mask.bool().any(dim=-1).all():
        raise ValueError("attention_mask has a row of all zeros: every sequence needs a token")


class BertPreTrainedModel(PretrainedMixin, nn.Module):
    """Shared by every model class: config, BERT's initialization, checkpoint loading and saving.
    `loss_labels` names, for each loss the output holds, the batch's labels it is the mean over
    (those not -100), so that gradient accumulation can weigh micro-batches exactly."""

    loss_labels: dict[str, str] = {}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config

    def init_weights(self):
        self.apply(self._init_module)
        return self

    def _init_module(self, m):
        std = self.config.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, MLMHead):
            nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Pooler(nn.Module):
    """tanh(dense(h_[CLS])): the sentence-level summary the NSP and classification heads read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h):  # (B, T, C) -> (B, C)
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(BertPreTrainedModel):
    """Embeddings, the encoder stack, and (optionally) the pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                output_attentions=False) -> BertOutput:
        """input_ids: (B, T); token_type_ids: (B, T) of 0/1; attention_mask: (B, T) of 1 = token."""
        check_inputs(self.config, input_ids, token_type_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None  # nothing padded: the fused attention kernels are fastest with no mask
        if attention_mask is not None and (not on_host(attention_mask)
                                           or not attention_mask.bool().all()):
            mask = padding_mask(attention_mask)  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        x, attentions = self.encoder(x, mask, output_attentions)
        pooled = self.pooler(x) if self.pooler is not None else None  # (B, C)
        return BertOutput(x, pooled, attentions)


class HeadTransform(nn.Module):
    """dense -> activation -> LayerNorm, applied before the vocabulary decoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h):  # (..., C) -> (..., C)
        return self.LayerNorm(self.act(self.dense(h)))


class MLMHead(nn.Module):
    """Predicts the vocabulary at each position; the decoder is the word-embedding matrix (tied)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = HeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h, word_embeddings):  # h: (..., C), word_embeddings: (V, C) -> (..., V)
        return F.linear(self.transform(h), word_embeddings, self.bias)


class MLMHeads(nn.Module):
    """`cls.predictions` (and, for pretraining, `cls.seq_relationship`), Hugging Face's layout."""

    def __init__(self, config: BertConfig, nsp: bool):
        super().__init__()
        self.predictions = MLMHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if nsp else None


def masked_lm(model, h, mlm_labels, mlm_positions=None):
    """MLM logits and loss. With labels, decode only the labelled positions, as BERT does:
    the vocabulary projection is the costliest matmul, and only ~15% of positions need it.

    mlm_positions (B, P), optional: the positions to decode, the same number in every row
    (BERT's masked_lm_positions; rows with fewer labels point the rest at any unlabelled
    position, such as 0). The logits are then (B, P, V), shapes that never change from batch to
    batch: nothing waits for the device and a compiled graph is traced once. Without it the
    labelled positions are found from the labels, and the logits are (N, V)."""
    decoder = model.bert.embeddings.word_embeddings.weight  # tied: (V, C)
    if mlm_labels is None:
        return model.cls.predictions(h, decoder), None  # (B, T, V)
    if mlm_labels.shape != h.shape[:2]:
        raise ValueError(f"mlm_labels has shape {tuple(mlm_labels.shape)}, expected "
                         f"{tuple(h.shape[:2])} like input_ids")
    if mlm_positions is not None:
        index = mlm_positions[..., None].expand(-1, -1, h.size(-1))  # (B, P, C)
        logits = model.cls.predictions(h.gather(1, index), decoder)  # (B, P, V)
        targets = mlm_labels.gather(1, mlm_positions)  # (B, P): IGNORE_INDEX where padded
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                 ignore_index=IGNORE_INDEX, reduction="sum")
        return logits, losses / (targets != IGNORE_INDEX).sum().clamp(min=1)
    labelled = mlm_labels != IGNORE_INDEX  # (B, T)
    logits = model.cls.predictions(h[labelled], decoder)  # (N, V)
    targets = mlm_labels[labelled]  # (N,)
    loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
    return logits, loss


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pretraining heads: masked LM and next sentence prediction."""

    loss_labels = {"mlm_loss": "mlm_labels", "nsp_loss": "nsp_labels"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = MLMHeads(config, nsp=True)
        self.init_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mlm_labels=None,
                nsp_labels=None, mlm_positions=None, output_attentions=False
                ) -> PreTrainingOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_attentions)
        mlm_logits, mlm_loss = masked_lm(self, out.last_hidden_state, mlm_labels, mlm_positions)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        nsp_loss = None if nsp_labels is None else F.cross_entropy(nsp_logits.float(), nsp_labels)
        parts = [x for x in (mlm_loss, nsp_loss) if x is not None]
        loss = sum(parts) if parts else None
        return PreTrainingOutput(mlm_logits, nsp_logits, loss, mlm_loss, nsp_loss, out.attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-LM head only (no pooler, no NSP)."""

    loss_labels = {"loss": "labels"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = MLMHeads(config, nsp=False)
        self.init_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                mlm_positions=None, output_attentions=False) -> HeadOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_attentions)
        logits, loss = masked_lm(self, out.last_hidden_state, labels, mlm_positions)
        return HeadOutput(logits, loss, out.attentions)


class BertClassifier(BertPreTrainedModel):
    """BERT, dropout and one linear layer: the shape shared by the classification heads."""

    loss_labels = {"loss": "labels"}

    def __init__(self, config: BertConfig, add_pooling_layer: bool, num_outputs: int):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_outputs)
        self.init_weights()


class BertForSequenceClassification(BertClassifier):
    """A linear classifier on the pooled [CLS] vector: one label per sequence (or pair)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True, num_outputs=config.num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                output_attentions=False) -> HeadOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return HeadOutput(logits, loss, out.attentions)


class BertForTokenClassification(BertClassifier):
    """A linear classifier on every token's vector: one label per token (-100 = no label)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=False, num_outputs=config.num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                output_attentions=False) -> HeadOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_attentions)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                   ignore_index=IGNORE_INDEX)
        return HeadOutput(logits, loss, out.attentions)


class BertForMultipleChoice(BertClassifier):
    """Scores each (context, choice) pair with one number; softmax over the choices."""

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True, num_outputs=1)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                output_attentions=False) -> HeadOutput:
        """input_ids, token_type_ids, attention_mask: (B, K, T) for K choices; labels: (B,)."""
        if input_ids.dim() != 3:
            raise ValueError("multiple choice input_ids must be (batch, num_choices, seq_len)")
        B, K, T = input_ids.shape
        flat = [None if t is None else t.reshape(B * K, T)
                for t in (input_ids, token_type_ids, attention_mask)]
        out = self.bert(*flat, output_attentions=output_attentions)
        logits = self.classifier(self.dropout(out.pooler_output)).view(B, K)  # (B, K)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return HeadOutput(logits, loss, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: for every token, a score for starting the answer and one for ending it."""

    loss_labels = {"loss": "start_positions"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None,
                end_positions=None, output_attentions=False) -> SpanOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask, output_attentions)
        start, end = self.qa_outputs(out.last_hidden_state).float().unbind(-1)  # (B, T) each
        if attention_mask is not None:  # padding is never an answer: its length changes nothing
            padding = attention_mask == 0
            start, end = (x.masked_fill(padding, torch.finfo(x.dtype).min) for x in (start, end))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (F.cross_entropy(start, start_positions)
                    + F.cross_entropy(end, end_positions)) / 2
        return SpanOutput(start, end, loss, out.attentions)
