"""Chapter 7: pretraining: the checks of exercises/07."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import randn

from ...model import IGNORE_INDEX
from ...training import lr_at as linear_lr_at
from .framework import Answer, Case, Exercise, Mistake


def token_losses(logits, labels):  # (b, T, V), (b, T) -> (b, T): 0 where the label is -100
    return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                           reduction="none")


def count(labels):  # the labelled positions of a micro-batch, a Python int
    return int((labels != IGNORE_INDEX).sum())


def accumulated(divide, clamp=True):
    """The micro-batches' losses, each its sum of token losses divided by `divide(labels, all
    labels)` (for the reference and the mistakes)."""
    def losses(micro_logits, micro_labels):
        return [token_losses(x, y).sum() / (max(divide(y, micro_labels), 1) if clamp
                                            else divide(y, micro_labels))
                for x, y in zip(micro_logits, micro_labels)]
    return losses


reference_accumulated_mlm_losses = accumulated(lambda y, every: sum(map(count, every)))


def own_means(scale_by_share=False, over_micro_batches=False):
    """Each micro-batch's own mean loss (NaN when it has no label), then scaled (mistakes)."""
    def losses(micro_logits, micro_labels):
        total = sum(map(count, micro_labels))
        out = []
        for x, y in zip(micro_logits, micro_labels):
            mean = F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            if scale_by_share:
                mean = mean * count(y) / max(total, 1)
            elif over_micro_batches:
                mean = mean / len(micro_labels)
            out.append(mean)
        return out
    return losses


def accumulation_cases():
    def labels(b, T, V, n):
        """(b, T) labels with n labelled positions at random, -100 elsewhere."""
        y = torch.full((b, T), IGNORE_INDEX)
        y.view(-1)[torch.randperm(b * T)[:n]] = torch.randint(V, (n,))
        return y

    def batch(V, *shapes):  # shapes: (b, T, labelled) per micro-batch
        return ([randn(b, T, V) for b, T, _ in shapes], [labels(b, T, V, n) for b, T, n in shapes])
    return [Case("2 micro-batches of 2, with 5 and 1 labels", batch(11, (2, 6, 5), (2, 6, 1))),
            Case("3 micro-batches of 1, 2 and 3 sequences, padded to 4, 7 and 5 tokens",
                 batch(9, (1, 4, 2), (2, 7, 6), (3, 5, 3))),
            Case("a micro-batch with no label", batch(7, (2, 5, 4), (2, 5, 0), (1, 5, 1))),
            Case("one micro-batch: the masked mean", batch(13, (3, 4, 5))),
            Case("every position labelled", batch(5, (1, 3, 3), (2, 3, 6))),
            Case("no label in the whole batch: every loss is 0", batch(6, (1, 4, 0), (2, 4, 0)))]


accumulated_mlm_losses = Exercise(
    "accumulated_mlm_losses", reference_accumulated_mlm_losses, accumulation_cases,
    [Mistake("that is the mean of the micro-batches' means (each mean divided by the number of "
             "micro-batches): a prediction in a micro-batch with few of them weighs more than one "
             "in a full micro-batch. Divide each micro-batch's *sum* of token losses by N, the "
             "number of predictions in the whole batch", own_means(over_micro_batches=True)),
     Mistake("each micro-batch's own mean, added up, counts the batch k times over and weighs "
             "micro-batches, not predictions: divide each micro-batch's sum of token losses by "
             "N, the predictions of the whole batch", own_means()),
     Mistake("a micro-batch with no prediction has a mean of 0/0 = NaN, which poisons the "
             "gradients: sum its token losses (0) instead of scaling its mean",
             own_means(scale_by_share=True)),
     Mistake("divide by the number of *labelled* positions of the whole batch, not by all of "
             "its positions", accumulated(lambda y, every: sum(x.numel() for x in every))),
     Mistake("divide by the predictions of the whole batch, N, not of the micro-batch alone",
             accumulated(lambda y, every: count(y))),
     Mistake("divide the sums by N, the number of predictions in the whole batch",
             accumulated(lambda y, every: 1)),
     Mistake("when no position of the whole batch is labelled, every loss is 0: divide by "
             "max(N, 1), not by N = 0", accumulated(lambda y, every: sum(map(count, every)),
                                                  clamp=False)),
     Mistake("return a list with one loss per micro-batch (each is backpropagated after its own "
             "forward pass), not their sum",
             lambda x, y: sum(reference_accumulated_mlm_losses(x, y)))],
    hint="N = the labelled positions (label != -100) of all micro-batches together, at least 1; "
         "for each micro-batch, the sum of its token cross-entropies (0 where the label is -100) "
         "divided by N; return them as a list of scalar tensors",
    exact=True,
    forbidden=("bertlab.model.masked_lm", "bertlab.model.BertForMaskedLM.forward",
               "bertlab.model.BertForPreTraining.forward", "bertlab.metrics.pretraining_metrics"))


def sop(segments_a, segments_b, generator, flip=False, above=False, labels_kind="long",
        nsp=False, keep_second=False):
    """ALBERT's sentence-order pairs (the keywords change one step, for the mistakes)."""
    draws = torch.rand(len(segments_a), generator=generator)  # (n,)
    swap = (draws >= 0.5 if above else draws < 0.5).tolist()
    n = len(segments_a)
    firsts, seconds = [], []
    for i, (a, b, s) in enumerate(zip(segments_a, segments_b, swap)):
        if nsp:  # NSP's negative: A with another pair's B
            first, second = a, (segments_b[(i + 1) % n] if s else b)
        elif keep_second:
            first, second = (b if s else a), b
        else:
            first, second = (b, a) if s else (a, b)
        firsts.append(first)
        seconds.append(second)
    labels = [1 - s if flip else int(s) for s in swap]
    labels = (torch.tensor(labels, dtype=torch.long) if labels_kind == "long" else
              torch.tensor(labels).bool() if labels_kind == "bool" else labels)
    return firsts, seconds, labels


def reference_sop_pairs(segments_a, segments_b, generator):
    return sop(segments_a, segments_b, generator)


def sop_cases():
    def segments(n, lo=1, hi=6):
        return [torch.randint(5, 100, (int(torch.randint(lo, hi, ())),)).tolist()
                for _ in range(n)]
    return [Case("6 pairs", (segments(6), segments(6), torch.Generator().manual_seed(0))),
            Case("one pair", (segments(1), segments(1), torch.Generator().manual_seed(3))),
            Case("20 pairs, segments of 1 to 9 tokens", (segments(20, 1, 10), segments(20, 1, 10),
                                                          torch.Generator().manual_seed(1))),
            Case("3 pairs, seed 7", (segments(3), segments(3), torch.Generator().manual_seed(7)))]


def wrong_sop(**change):
    return lambda a, b, generator: sop(a, b, generator, **change)


sop_pairs = Exercise(
    "sop_pairs", reference_sop_pairs, sop_cases,
    [Mistake("label 1 means swapped (out of order) and 0 in order: the true order is class 0, as "
             "IsNext is in NSP", wrong_sop(flip=True)),
     Mistake("pair i is swapped where its draw is < 0.5", wrong_sop(above=True)),
     Mistake("sentence-order prediction keeps a pair's own two segments and swaps their order; "
             "a B taken from another pair is NSP's negative", wrong_sop(nsp=True)),
     Mistake("a swapped pair is (B, A): the second segment becomes A, not B again (swap both, "
             "`first, second = b, a`)", wrong_sop(keep_second=True)),
     Mistake("labels: a long tensor of 0s and 1s, the class indices cross_entropy takes, not a "
             "bool tensor", wrong_sop(labels_kind="bool")),
     Mistake("labels: a long tensor of 0s and 1s (torch.tensor(..., dtype=torch.long)), not a "
             "list", wrong_sop(labels_kind="list"))],
    hint="draws = torch.rand(len(segments_a), generator=generator); pair i is (B, A) with label "
         "1 where draws[i] < 0.5, else (A, B) with label 0; return (firsts, seconds, labels): "
         "two lists of segments and a (n,) long tensor",
    returns=("firsts", "seconds", "labels"), exact=True)


def reference_cosine_lr_at(step, lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 at the peak
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def cosine(rise=None, fall=None):
    """The cosine schedule with its warmup `rise(s, lr, w)` or its decay `fall(s, lr, w, t)`
    replaced (for the mistakes)."""
    def lr_at(s, lr, w, t):
        if s < w:
            return rise(s, lr, w) if rise else lr * (s + 1) / (w + 1)
        return fall(s, lr, w, t) if fall else reference_cosine_lr_at(s, lr, w, t)
    return lr_at


def lr_cases():
    peak, warmup, total = 1e-3, 10, 100
    return ([Case(f"step {s} (warmup 10, total 100)", (s, peak, warmup, total))
             for s in (0, 4, 9, 10, 32, 55, 99)]
            + [Case("no warmup, step 0", (0, 5e-4, 0, 20)),
               Case("no warmup, step 15 of 20", (15, 5e-4, 0, 20))])


cosine_lr_at = Exercise(
    "cosine_lr_at", reference_cosine_lr_at, lr_cases,
    [Mistake("step counts from 0, and update 0 already gets lr·1/(warmup_steps + 1)",
             cosine(rise=lambda s, lr, w: lr * s / w)),
     Mistake("the cosine runs over the steps after the warmup: progress = (step - warmup) / "
             "(total - warmup)", cosine(fall=lambda s, lr, w, t: lr * 0.5 * (
                 1 + math.cos(math.pi * s / t)))),
     Mistake("that is chapter 7's linear decay: after the warmup the rate follows half a cosine, "
             "lr·0.5·(1 + cos(π·progress))", lambda s, lr, w, t: linear_lr_at(s, lr, w, t)),
     Mistake("half a cosine from 1 to 0 is 0.5·(1 + cos(π·progress)), not cos(π·progress)",
             cosine(fall=lambda s, lr, w, t: lr * math.cos(math.pi * (s - w) / (t - w)))),
     Mistake("return a Python float (math.cos, not torch.cos)",
             lambda s, lr, w, t: torch.tensor(reference_cosine_lr_at(s, lr, w, t)))],
    hint="step < warmup_steps: lr·(step + 1)/(warmup_steps + 1); after: "
         "lr·0.5·(1 + cos(π·(step - warmup_steps)/(total_steps - warmup_steps))), a Python float",
    exact=True)


initial_loss = Answer(
    "initial_loss", lambda: round(math.log(30) + math.log(2), 2), tolerance=0.01,
    hint="a model that knows nothing spreads its probability evenly: the cross-entropy of a "
         "uniform guess over n classes is ln n; the demo's loss is the MLM loss plus the "
         "sentence-order loss",
    wrong=[Mistake("that is the MLM loss alone: the demo's loss adds the sentence-order loss "
                   "over its 2 classes, ln 2",
                   lambda: round(math.log(30), 2)),
           Mistake("cross-entropy uses the natural log, not log10",
                   lambda: round(math.log10(30) + math.log10(2), 2)),
           Mistake("that is the sentence-order loss alone: add the MLM loss over the 30-token "
                   "vocabulary",
                   lambda: round(math.log(2), 2)),
           Mistake("the MLM head chooses among all V = 30 ids, not the 20 counting tokens",
                   lambda: round(math.log(20) + math.log(2), 2))])
