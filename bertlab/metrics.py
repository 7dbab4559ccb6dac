"""How well a model does: the scores of the course's tasks, and the training log's metrics.

Scores of whole evaluations, on plain Python values:
    accuracy                       classification and multiple choice
    entity_spans, entity_scores    BIO tags -> entities (start, end, type), and seqeval's P/R/F1
    span_scores                    P/R/F1 of (start, end, type) spans, per sequence
    exact_match, token_f1          SQuAD's answer scores
    best_span                      the answer span an extractive-QA head predicts

Metrics of one batch, on the device, for the training log (`train(..., metrics=...)`): each
takes (batch, output) and returns {name: 0-d tensor}.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from .config import IGNORE_INDEX

MAX_ANSWER_TOKENS = 30  # the longest answer best_span considers by default, as SQuAD's evaluation


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


def entity_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """The entities of a BIO sequence as (start, end, type), end exclusive. As conlleval and
    seqeval read tags: an entity starts at B-X, or at an I-X that does not continue an X; it runs
    over the I-X that follow."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and tag_kind == kind
        if start is not None and not continues:
            spans.add((start, i, kind))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, tag_kind
    return spans


def span_scores(gold: Sequence[Iterable[tuple]], predicted: Sequence[Iterable[tuple]]
                ) -> dict[str, float]:
    """Micro precision, recall and F1 of predicted spans against gold ones, one collection of
    (start, end, type) spans per sequence: a span is right only in its own sequence."""
    true = {(n, *span) for n, spans in enumerate(gold) for span in spans}
    found = {(n, *span) for n, spans in enumerate(predicted) for span in spans}
    hits = len(true & found)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """Entity-level precision, recall and F1 of BIO tag sequences, as seqeval: an entity is
    found only if its start, end and type all match."""
    return span_scores([entity_spans(tags) for tags in gold],
                       [entity_spans(tags) for tags in predicted])


def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalization, as words: lowercase, no punctuation, no articles."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD's F1: the harmonic mean of precision and recall of the normalized words."""
    predicted, true = normalize_answer(prediction), normalize_answer(answer)
    if not predicted or not true:
        return float(predicted == true)
    same = sum((Counter(predicted) & Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, first: int, last: int,
              max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[int, int]:
    """The (start, end) token positions with the highest start + end score such that
    first <= start <= end <= last and the span is at most `max_tokens` long."""
    scores = (start_logits[first:last + 1, None]
              + end_logits[None, first:last + 1]).float()  # (N, N): [start, end]
    i = torch.arange(scores.shape[0])
    length = i[None, :] - i[:, None]  # (N, N): end - start
    scores = scores.masked_fill((length < 0) | (length >= max_tokens), float("-inf"))
    start, end = divmod(scores.argmax().item(), scores.shape[0])
    return first + start, first + end


# ----------------------------------------------------------------------------------------------
# Metrics of a batch, for the training log


def class_accuracy(batch, output) -> dict[str, torch.Tensor]:
    return {"accuracy": (output.logits.argmax(-1) == batch["labels"]).float().mean()}


def token_accuracy(batch, output) -> dict[str, torch.Tensor]:
    """The share of tagged tokens (first pieces of words) whose tag is right."""
    tagged = batch["labels"] != IGNORE_INDEX  # (B, T)
    right = (output.logits.argmax(-1) == batch["labels"]) & tagged  # (B, T)
    return {"token_accuracy": right.sum() / tagged.sum().clamp(min=1)}


def span_accuracy(batch, output) -> dict[str, torch.Tensor]:
    """The share of examples whose most likely start and most likely end are both right."""
    right = ((output.start_logits.argmax(-1) == batch["start_positions"])
             & (output.end_logits.argmax(-1) == batch["end_positions"]))  # (B,)
    return {"span_accuracy": right.float().mean()}


def pretraining_metrics(batch: dict[str, torch.Tensor], output) -> dict[str, torch.Tensor]:
    """MLM accuracy at the masked positions, and NSP accuracy when the batch has NSP labels."""
    labels = batch["mlm_labels"]
    if "mlm_positions" in batch:  # logits (B, P, V) at fixed positions: no wait for the device
        targets = labels.gather(1, batch["mlm_positions"])  # (B, P)
        scored = targets != IGNORE_INDEX
        right = (output.mlm_logits.argmax(-1) == targets) & scored
        values = {"mlm_acc": right.sum() / scored.sum().clamp(min=1)}
    else:  # logits (N, V) at the N labelled positions
        targets = labels[labels != IGNORE_INDEX]  # (N,)
        values = {"mlm_acc": (output.mlm_logits.argmax(-1) == targets).float().mean()}
    if "nsp_labels" in batch:
        nsp_correct = output.nsp_logits.argmax(-1) == batch["nsp_labels"]  # (B,)
        values["nsp_acc"] = nsp_correct.float().mean()
    return values
