"""Chapter 8: fine-tuning, classification: the checks of exercises/08."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import randn

from .framework import Answer, Case, Exercise, Mistake


def padded(hidden, attention_mask, shift=3.0):
    """hidden with its padding vectors moved up by `shift`: padding that is not left out of a
    pooling then shows (an encoder's vectors at [PAD] are not zero either)."""
    return hidden + shift * (1 - attention_mask[..., None].to(hidden.dtype))


def pool_cases(extra=lambda C: ()):
    """(hidden (B, T, C), attention_mask (B, T) int64) cases, then `extra(C)` more arguments."""
    one_real = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    some_padding = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return [Case("padding in one row", (padded(randn(2, 5, 6), some_padding), some_padding,
                                        *extra(6))),
            Case("a row with one real token", (padded(randn(2, 4, 3), one_real), one_real,
                                               *extra(3))),
            Case("batch of 1, no padding", (randn(1, 3, 4), torch.ones(1, 3, dtype=torch.long),
                                            *extra(4)))]


def max_pool_wrong(fill=float("-inf"), use_mask=True, dim=1, values=True):
    """Masked max pooling with one step changed by the keywords (for the mistakes)."""
    def pool(hidden, attention_mask):
        real = attention_mask[..., None].bool() if use_mask else torch.ones_like(hidden).bool()
        if fill == 0:  # multiplying by the mask
            masked = hidden * real
        else:
            masked = hidden.masked_fill(~real, fill)
        return masked.amax(dim) if values else masked.max(dim)
    return pool


reference_masked_max_pool = max_pool_wrong()

masked_max_pool = Exercise(
    "masked_max_pool", reference_masked_max_pool, pool_cases,
    [Mistake("leave the padding out of the max: only positions where attention_mask is 1 count "
             "(padding vectors are not zero)", max_pool_wrong(use_mask=False)),
     Mistake("multiplying by the mask makes the padding 0, and 0 wins every feature that is "
             "negative at all the real tokens: fill the padding with -inf before the max",
             max_pool_wrong(fill=0)),
     Mistake("the max runs over the tokens (dim=1), one value per feature: (B, T, C) -> (B, C)",
             max_pool_wrong(dim=-1)),
     Mistake("hidden.max(dim=1) returns (values, indices): take .values, or use amax",
             max_pool_wrong(values=False))],
    hint="masked_fill the padding positions (attention_mask == 0) with -inf, then the max over "
         "dim=1 (.amax(1) or .max(1).values)")


def attention_pool_wrong(mask_scores=True, mask_after=False, dim=-1, scale=False):
    """Attention pooling with one step changed by the keywords (for the mistakes)."""
    def pool(hidden, attention_mask, query):
        scores = hidden @ query  # (B, T)
        if scale:
            scores = scores / hidden.size(-1) ** 0.5
        real = attention_mask.bool()  # (B, T)
        if mask_scores:
            scores = scores.masked_fill(~real, float("-inf"))
        weights = scores.softmax(dim)  # (B, T)
        if mask_after:
            weights = weights * real
        return (weights[..., None] * hidden).sum(1), weights  # (B, C), (B, T)
    return pool


reference_attention_pool = attention_pool_wrong()

attention_pool = Exercise(
    "attention_pool", reference_attention_pool, lambda: pool_cases(lambda C: (randn(C),)),
    [Mistake("padding gets attention: set the scores where attention_mask is 0 to -inf before "
             "the softmax", attention_pool_wrong(mask_scores=False)),
     Mistake("zeroing the padding's weights after the softmax leaves weights that do not sum to "
             "1: mask the scores before the softmax instead",
             attention_pool_wrong(mask_scores=False, mask_after=True)),
     Mistake("the softmax runs over the tokens of each sequence (dim=-1), not over the batch",
             attention_pool_wrong(dim=0)),
     Mistake("the scores are the plain dot products h_t · query: no 1/sqrt(C) here",
             attention_pool_wrong(scale=True))],
    hint="scores = hidden @ query (B, T); -inf where attention_mask is 0; weights = softmax over "
         "dim=-1; pooled = (weights[..., None] * hidden).sum(1); return (pooled, weights)",
    returns=("pooled", "weights"),
    forbidden=("bertlab.attention.scaled_dot_product_attention",))


def balanced_wrong(weigh=lambda n: 1 / n, divide="weights", softmax_first=False):
    """The class-balanced cross-entropy with one step changed by the keywords (for the
    mistakes): each example's loss weighted by weigh(n of its class in the batch), the sum
    divided by the sum of the weights, N, or K."""
    def loss(logits, labels):
        counts = torch.bincount(labels, minlength=logits.size(-1)).to(logits.dtype)  # (K,)
        weights = weigh(counts[labels])  # (N,): each example's weight
        scores = logits.softmax(-1) if softmax_first else logits
        losses = F.cross_entropy(scores, labels, reduction="none")  # (N,)
        total = (weights * losses).sum()
        return total / {"weights": weights.sum(), "N": labels.numel(),
                        "K": logits.size(-1)}[divide]
    return loss


reference_balanced_cross_entropy = balanced_wrong()


def balanced_cases():
    return [Case("imbalanced: 5, 1 and 2 examples of 3 classes",
                 (randn(8, 3), torch.tensor([0, 0, 1, 0, 2, 0, 2, 0]))),
            Case("a class absent from the batch (4 classes, 2 present)",
                 (randn(5, 4), torch.tensor([0, 3, 3, 3, 0]))),
            Case("balanced: 2 of each class", (randn(4, 2), torch.tensor([0, 1, 1, 0]))),
            Case("one example", (randn(1, 3), torch.tensor([2])))]


balanced_cross_entropy = Exercise(
    "balanced_cross_entropy", reference_balanced_cross_entropy, balanced_cases,
    [Mistake("weight each example by 1 / (the number of examples of its class in the batch): "
             "plain cross-entropy lets the frequent class dominate",
             balanced_wrong(weigh=torch.ones_like)),
     Mistake("the weight is inverse to the class's frequency, 1/n: the rare class must count "
             "more, not less", balanced_wrong(weigh=lambda n: n)),
     Mistake("divide the weighted sum by the sum of the weights (the number of classes in the "
             "batch), not by the number of examples N", balanced_wrong(divide="N")),
     Mistake("average over the classes that occur in the batch: a class with no examples has "
             "no loss to count, so divide by the sum of the weights, not by K",
             balanced_wrong(divide="K")),
     Mistake("F.cross_entropy takes the raw logits: it applies the log-softmax itself",
             balanced_wrong(softmax_first=True))],
    hint="n = torch.bincount(labels, minlength=K); w = 1 / n[labels]; losses = "
         "F.cross_entropy(logits, labels, reduction='none'); return (w * losses).sum() / w.sum()")


def macro_f1_wrong(over="present"):
    """Macro-F1 of the argmax predictions, averaged over the classes `over` names (for the
    mistakes: "all" K, only the "predicted" ones, only the "labelled" ones)."""
    def score(logits, labels):
        predictions = logits.argmax(-1)
        f1s = []
        for k in range(logits.size(-1)):
            tp = int(((predictions == k) & (labels == k)).sum())
            fp = int(((predictions == k) & (labels != k)).sum())
            fn = int(((predictions != k) & (labels == k)).sum())
            predicted, labelled = tp + fp > 0, tp + fn > 0
            keep = {"present": predicted or labelled, "all": True, "predicted": predicted,
                    "labelled": labelled}[over]
            if keep:
                f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        return sum(f1s) / len(f1s)
    return score


reference_macro_f1 = macro_f1_wrong()


def macro_f1_cases():
    return [Case("3 classes, class 2 never predicted",
                 (torch.tensor([[2.0, 1, 0], [0, 3, 1], [1, 0, 0.5], [0, 2, 1], [3, 0, 1],
                                [1, 2, 0]]), torch.tensor([0, 1, 2, 1, 0, 2]))),
            Case("4 classes, class 3 neither in the labels nor predicted",
                 (torch.tensor([[2.0, 0, 1, -1], [0, 1, 3, -1], [1, 2, 0, -1], [0, 0, 4, -1],
                                [5, 1, 0, -1]]), torch.tensor([0, 2, 1, 2, 1]))),
            Case("class 1 predicted, never in the labels",
                 (torch.tensor([[0.0, 1], [1, 0], [0, 2], [3, 1]]), torch.tensor([0, 0, 0, 0]))),
            Case("always class 0, balanced labels: the 'always comedy' model",
                 (torch.tensor([[1.0, 0, 0]] * 6), torch.tensor([0, 1, 2, 0, 1, 2]))),
            Case("all right", (torch.tensor([[0.0, 2], [1, 0], [0, 1]]), torch.tensor([1, 0, 1])))]


macro_f1 = Exercise(
    "macro_f1", reference_macro_f1, macro_f1_cases,
    [Mistake("that is the accuracy (micro-F1): compute F1 for each class, then average the "
             "classes' F1s", lambda x, y: (x.argmax(-1) == y).float().mean().item()),
     Mistake("leave out a class that is neither in the labels nor predicted (its F1 is 0/0); "
             "average over the others", macro_f1_wrong(over="all")),
     Mistake("a class in the labels that is never predicted counts, with F1 0: average over the "
             "classes in the labels or the predictions", macro_f1_wrong(over="predicted")),
     Mistake("a class that is predicted but never in the labels counts too, with F1 0 (all its "
             "predictions are false positives)", macro_f1_wrong(over="labelled"))],
    hint="predictions = logits.argmax(-1); for each class k with any TP + FP + FN: F1_k = 2TP / "
         "(2TP + FP + FN); return the mean of those F1s as a float", exact=True,
    forbidden=("bertlab.metrics.span_scores",))


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
