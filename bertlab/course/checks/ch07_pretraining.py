"""Chapter 7: pretraining: the checks of exercises/07."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import randn

from ...model import IGNORE_INDEX
from ...training import lr_at as linear_lr_at
from .framework import Answer, Case, Exercise, Mistake


def reference_masked_lm_loss(logits, labels):  # (B, T, V), (B, T) -> ()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def per_token_loss(logits, labels):  # (B, T): the loss at each position, 0 where ignored
    return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                           reduction="none")


def masked_lm_cases():
    def labels(B, T, V, positions):
        y = torch.full((B, T), IGNORE_INDEX)
        for b, t in positions:
            y[b, t] = torch.randint(V, ()).item()
        return y
    return [Case("batch of 2, 3 and 1 labels", (randn(2, 6, 11),
                                                labels(2, 6, 11, [(0, 1), (0, 3), (0, 4),
                                                                  (1, 2)]))),
            Case("batch of 1, one label", (randn(1, 5, 7), labels(1, 5, 7, [(0, 2)]))),
            Case("every position labelled", (randn(2, 3, 5), torch.randint(5, (2, 3))))]


masked_lm_loss = Exercise(
    "masked_lm_loss", reference_masked_lm_loss, masked_lm_cases,
    [Mistake("you averaged over *every* position, so the loss shrinks with the share of "
             "masked tokens (the d2l slip: 0/1 weights, then a mean over all positions); divide "
             "by the number of labelled positions", lambda x, y: per_token_loss(x, y).mean()),
     Mistake("average over the labelled positions, don't sum",
             lambda x, y: per_token_loss(x, y).sum()),
     Mistake("average over all labelled tokens of the batch, not per sequence then over "
             "sequences", lambda x, y: (per_token_loss(x, y).sum(1)
                                        / (y != IGNORE_INDEX).sum(1)).mean())],
    hint="cross-entropy over the (B·T, V) logits with ignore_index=-100: the mean over the "
         "labelled positions only",
    forbidden=("bertlab.model.masked_lm", "bertlab.model.BertForMaskedLM.forward",
               "bertlab.model.BertForPreTraining.forward", "bertlab.metrics.pretraining_metrics"))


nsp_loss = Exercise(
    "nsp_loss", lambda logits, is_next: F.cross_entropy(logits, (~is_next).long()),
    lambda: [Case("batch of 4", (randn(4, 2), torch.tensor([True, False, False, True]))),
             Case("batch of 1, NotNext", (randn(1, 2), torch.tensor([False]))),
             Case("all IsNext", (randn(3, 2), torch.ones(3, dtype=torch.bool)))],
    [Mistake("label 0 is IsNext and 1 is NotNext (BERT's convention): labels = (~is_next).long()",
             lambda x, is_next: F.cross_entropy(x, is_next.long())),
     Mistake("average over the batch, don't sum",
             lambda x, is_next: F.cross_entropy(x, (~is_next).long(), reduction="sum")),
     Mistake("cross_entropy takes the raw logits: it applies the softmax itself",
             lambda x, is_next: F.cross_entropy(x.softmax(-1), (~is_next).long()))],
    hint="F.cross_entropy(logits, labels) with labels 0 for IsNext, 1 for NotNext",
    forbidden=("bertlab.model.BertForPreTraining.forward", "bertlab.metrics.pretraining_metrics"))


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
         "uniform guess over n classes is ln n; the demo's loss is the MLM loss plus the NSP loss",
    wrong=[Mistake("that is the MLM loss alone: the demo's loss adds the NSP loss, ln 2",
                   lambda: round(math.log(30), 2)),
           Mistake("cross-entropy uses the natural log, not log10",
                   lambda: round(math.log10(30) + math.log10(2), 2)),
           Mistake("that is the NSP loss alone: add the MLM loss over the 30-token vocabulary",
                   lambda: round(math.log(2), 2)),
           Mistake("the MLM head chooses among all V = 30 ids, not the 20 counting tokens",
                   lambda: round(math.log(20) + math.log(2), 2))])
