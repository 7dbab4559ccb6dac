"""Chapter 8: fine-tuning, classification: the checks of exercises/08."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn, randn

from .framework import Answer, Case, Exercise, Mistake


def pooler_cases():
    return [Case("batch of 2", (randn(2, 5, 6), nn.Linear(6, 6))),
            Case("batch of 1, one token", (randn(1, 1, 4), nn.Linear(4, 4)))]


pooler = Exercise(
    "pooler", lambda h, dense: torch.tanh(dense(h[:, 0])), pooler_cases,
    [Mistake("BERT's pooler reads the first token, [CLS], not the mean of all tokens",
             lambda h, dense: torch.tanh(dense(h.mean(1)))),
     Mistake("the first token, [CLS], is h[:, 0], not the last one",
             lambda h, dense: torch.tanh(dense(h[:, -1]))),
     Mistake("finish with tanh", lambda h, dense: dense(h[:, 0]))],
    hint="tanh(dense(hidden[:, 0])): the [CLS] vector through a linear layer and tanh",
    forbidden=("bertlab.model.Pooler.forward",))


def reference_mean_pool(hidden, attention_mask):  # (B, T, C), (B, T) -> (B, C)
    mask = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1)


mean_pool = Exercise(
    "mean_pool", reference_mean_pool,
    lambda: [Case("padding in one row", (randn(2, 4, 3), torch.tensor([[1, 1, 0, 0],
                                                                     [1, 1, 1, 1]]))),
             Case("batch of 1, no padding", (randn(1, 3, 5), torch.ones(1, 3, dtype=torch.long)))],
    [Mistake("leave the padding out of the mean: only positions where attention_mask is 1",
             lambda h, m: h.mean(1)),
     Mistake("divide by the number of real tokens, not by T",
             lambda h, m: (h * m[..., None]).sum(1) / h.size(1))],
    hint="sum the vectors where attention_mask is 1, divide by how many there are")


def reference_classification_head(pooled, weight, bias, labels=None):
    logits = pooled @ weight.T + bias  # (B, C) @ (C, K) -> (B, K)
    return logits, None if labels is None else F.cross_entropy(logits, labels)


classification_head = Exercise(
    "classification_head", reference_classification_head,
    lambda: [Case("batch of 4, 3 classes", (randn(4, 6), randn(3, 6), randn(3),
                                            torch.tensor([0, 2, 1, 2]))),
             Case("no labels", (randn(2, 6), randn(3, 6), randn(3))),
             Case("batch of 1, 2 classes", (randn(1, 4), randn(2, 4), randn(2),
                                            torch.tensor([1])))],
    [Mistake("cross_entropy takes the raw logits: it applies the softmax itself",
             lambda x, w, b, y=None: (x @ w.T + b, None if y is None else F.cross_entropy(
                 (x @ w.T + b).softmax(-1), y))),
     Mistake("average the loss over the batch, don't sum",
             lambda x, w, b, y=None: (x @ w.T + b, None if y is None else F.cross_entropy(
                 x @ w.T + b, y, reduction="sum"))),
     Mistake("add the bias", lambda x, w, b, y=None: reference_classification_head(
         x, w, torch.zeros_like(b), y))],
    hint="logits = pooled @ weight.T + bias (weight is (K, C) like nn.Linear's); loss = "
         "F.cross_entropy(logits, labels), or None without labels",
    returns=("logits", "loss"),
    forbidden=("bertlab.model.BertForSequenceClassification.forward",))


accuracy = Exercise(
    "accuracy", lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
    lambda: [Case("5 examples, 3 classes", (torch.tensor([[2.0, 1, 0], [0, 3, 1], [1, 0, 4],
                                                           [5, 0, 1], [0, 1, 0.5]]),
                                             torch.tensor([0, 1, 1, 1, 2]))),
             Case("one example, right", (torch.tensor([[0.1, 0.9]]), torch.tensor([1]))),
             Case("two classes, 4 examples", (randn(4, 2), torch.tensor([0, 1, 1, 0])))],
    [Mistake("return the fraction right (a float between 0 and 1), not the count",
             lambda x, y: (x.argmax(-1) == y).sum().item()),
     Mistake("the predicted class is the argmax over the classes (dim=-1)",
             lambda x, y: (x.argmin(-1) == y).float().mean().item()),
     Mistake("return a Python float (`.item()`), not a 0-d tensor",
             lambda x, y: (x.argmax(-1) == y).float().mean())],
    hint="(logits.argmax(-1) == labels).float().mean().item()", exact=True,
    forbidden=("bertlab.metrics.class_accuracy",))


head_parameters = Answer(
    "head_parameters", lambda: 768 * 3 + 3,
    hint="the head is one nn.Linear(C, K): a (K, C) weight and a (K,) bias; the pooler and the "
         "encoder are pretrained, not new",
    wrong=[Mistake("count the bias too: one number per class", lambda: 768 * 3),
           Mistake("the pooler is part of the pretrained model: only the head is new",
                   lambda: 768 * 768 + 768 + 768 * 3 + 3),
           Mistake("the weight is (K, C) = (3, 768): C·K numbers, plus K biases",
                   lambda: 768 * 768 + 768)])


def neighbour_cosines(pool="mean"):
    """The cosine of sentence 0 with sentences 1 and 2 (mean-pooled MiniLM, length 1)."""
    from tokenizers import Tokenizer

    from ...checkpoint import minilm_path
    from ...model import BertModel
    model = BertModel.from_pretrained(minilm_path()).eval()
    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(COSINE_TEXTS)
    ids = torch.tensor([e.ids for e in encodings])  # (3, T)
    mask = torch.tensor([e.attention_mask for e in encodings])  # (3, T)
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask).last_hidden_state  # (3, T, C)
    if pool == "mean":
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (3, C)
    else:  # the final vector of [CLS]
        pooled = hidden[:, 0]  # (3, C)
    pooled = F.normalize(pooled, dim=-1)
    return [round(x, 2) for x in (pooled[0] @ pooled[1:].T).tolist()]


COSINE_TEXTS = ["A man is playing a guitar.", "Someone plays an instrument.",
                "A man is playing football."]

measured_cosines = Answer(
    "measured_cosines", neighbour_cosines, tolerance=0.01,
    hint="embed the three sentences with your `embed` and take the dot products of sentence 0 "
         "with sentences 1 and 2, rounded to 2 decimals",
    wrong=[Mistake("that is the cosine of the [CLS] vectors: MiniLM's sentence embedding is the "
                   "mean of the real tokens' vectors (your `embed`)",
                   lambda: neighbour_cosines(pool="cls"))])
