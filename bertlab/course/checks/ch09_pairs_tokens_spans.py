"""Chapter 9: pairs, tokens, spans: the checks of exercises/09."""

from __future__ import annotations

import torch
from torch import randn

from ... import metrics
from .framework import Answer, Case, Exercise, Mistake


def reference_best_span(start_logits, end_logits, max_tokens):  # the whole sequence is context
    return metrics.best_span(start_logits, end_logits, 0, start_logits.size(0) - 1, max_tokens)


def span_cases():
    s = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 3.0, 0.2, 0.1])
    e = torch.tensor([0.0, 0.1, 4.0, 0.3, 0.2, 0.1, 0.5, 2.0])
    return [Case("the best end comes before the best start", (s, e, 8)),
            Case("the longest answer too long", (s, e, 2)),
            Case("at most 3 tokens", (torch.tensor([2.0, 0, 0, 0, 0]),
                                      torch.tensor([0.0, 0, 1, 1.5, 0]), 3)),
            Case("at most 2 tokens", (torch.tensor([3.0, 0, 0, 0, 0, 0]),
                                      torch.tensor([0.0, 1, 2, 0, 0, 5]), 2)),
            Case("one token", (torch.tensor([1.0]), torch.tensor([2.0]), 30)),
            Case("random, T=20", (randn(20), randn(20), 5))]


best_answer_span = Exercise(
    "best_answer_span", reference_best_span, span_cases,
    [Mistake("taking the two argmaxes separately can end before it starts: search the pairs "
             "with start <= end", lambda s, e, n: (s.argmax().item(), e.argmax().item())),
     Mistake("limit the answer to max_tokens tokens: end - start + 1 <= max_tokens",
             lambda s, e, n: reference_best_span(s, e, s.size(0))),
     Mistake("max_tokens counts the tokens of the answer: end - start + 1 <= max_tokens (end - "
             "start < max_tokens)", lambda s, e, n: reference_best_span(s, e, n + 1)),
     Mistake("max_tokens counts the tokens of the answer: end - start + 1 <= max_tokens",
             lambda s, e, n: reference_best_span(s, e, max(n - 1, 1))),
     Mistake("return two Python ints (`.item()`), not tensors",
             lambda s, e, n: tuple(torch.tensor(x) for x in reference_best_span(s, e, n)))],
    hint="score(i, j) = start_logits[i] + end_logits[j] for i <= j <= i + max_tokens - 1; return "
         "the best (i, j) as two ints",
    returns=("start", "end"), exact=True,
    forbidden=("bertlab.metrics.best_span",))


def read_bio(tags, flush=True, typed=True, stray_i=True, split_b=True):
    """BIO tags to (start, end, type) spans, with one rule broken by a flag (for the mistakes;
    with none broken it reads them as bertlab.metrics.entity_spans does)."""
    spans, current = [], None  # current: (type, start)
    for i, tag in enumerate([*tags, "O"] if flush else tags):
        kind, _, label = tag.partition("-")
        continues = kind == "I" and current is not None and (label == current[0] or not typed)
        continues |= kind == "B" and current is not None and not split_b and label == current[0]
        if current is not None and not continues:
            spans.append((current[1], i, current[0]))
            current = None
        if current is None and (kind == "B" or (kind == "I" and stray_i)):
            current = (label, i)
    return spans


def bio_cases():
    return [Case("two entities", (["B-PER", "I-PER", "O", "B-LOC"],)),
            Case("an entity at the end", (["O", "B-ORG", "I-ORG", "I-ORG"],)),
            Case("B-X B-X: two entities", (["B-PER", "B-PER", "O"],)),
            Case("I-LOC after B-PER starts a new entity", (["B-PER", "I-LOC", "O"],)),
            Case("an I- with nothing before it", (["O", "I-MISC", "I-MISC", "O"],)),
            Case("no entities", (["O", "O"],))]


bio_to_spans = Exercise(
    "bio_to_spans", lambda tags: sorted(metrics.entity_spans(tags)), bio_cases,
    [Mistake("the last entity is lost: close the one still open after the last tag",
             lambda tags: read_bio(tags, flush=False)),
     Mistake("an I- tag continues an entity only of the same type; I-LOC after B-PER starts a "
             "LOC entity", lambda tags: read_bio(tags, typed=False)),
     Mistake("an I-X that continues nothing starts an X entity (as the CoNLL scorer reads it)",
             lambda tags: read_bio(tags, stray_i=False)),
     Mistake("every B- starts a new entity, even right after one of the same type",
             lambda tags: read_bio(tags, split_b=False))],
    hint="walk the tags: B-X, or an I-X that does not continue an X entity, starts one; anything "
         "else but I-X closes it; return (start, end, type) with end exclusive", exact=True,
    forbidden=("bertlab.metrics.entity_spans", "bertlab.metrics.entity_scores"))


def reference_f1_by_type(gold, pred):
    """[(type, precision, recall, f1)] for each type in gold or pred, sorted by type."""
    kinds = sorted({span[2] for spans in (*gold, *pred) for span in spans})
    return [(kind, *metrics.span_scores([[s for s in g if s[2] == kind] for g in gold],
                                         [[s for s in p if s[2] == kind] for p in pred]).values())
            for kind in kinds]


def untyped_f1_by_type(gold, pred):
    """Right when the span matches, whatever its type (the type only picks the row)."""
    rows = []
    for kind, *_ in reference_f1_by_type(gold, pred):
        g = {(i, a, b) for i, spans in enumerate(gold) for a, b, t in spans if t == kind}
        p = {(i, a, b) for i, spans in enumerate(pred) for a, b, t in spans if t == kind}
        every = {(i, a, b) for i, spans in enumerate(gold) for a, b, _ in spans}
        right = len({x for x in p if x in every})
        precision = right / len(p) if p else 0.0
        recall = min(right, len(g)) / len(g) if g else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((kind, precision, recall, f1))
    return rows


def by_sentence_average(gold, pred):
    rows = {}
    for g, p in zip(gold, pred):
        for kind, *scores in reference_f1_by_type([g], [p]):
            rows.setdefault(kind, []).append(scores)
    return [(kind, *(sum(s[k] for s in rows[kind]) / len(rows[kind]) for k in range(3)))
            for kind in sorted(rows)]


def entity_cases():
    gold = [[(0, 2, "PER"), (3, 4, "LOC")], [(1, 4, "ORG")], [(0, 1, "PER")]]
    pred = [[(0, 2, "PER"), (2, 4, "LOC")], [(1, 4, "ORG"), (0, 1, "PER"), (5, 6, "LOC")], []]
    return [Case("three sentences, three types", (gold, pred)),
            Case("the right span with the wrong type", ([[(0, 2, "PER"), (3, 5, "LOC")]],
                                                        [[(0, 2, "ORG"), (3, 5, "LOC")]])),
            Case("a span right in the wrong sentence", ([[(0, 1, "PER")], []],
                                                        [[], [(0, 1, "PER")]])),
            Case("a type never predicted, half of another found",
                 ([[(0, 1, "LOC"), (2, 3, "PER"), (4, 5, "PER")]], [[(2, 3, "PER")]])),
            Case("all right", ([[(0, 1, "LOC")], [(2, 3, "PER")]],
                               [[(0, 1, "LOC")], [(2, 3, "PER")]])),
            Case("no entities at all", ([[], []], [[], []]))]


entity_f1_by_type = Exercise(
    "entity_f1_by_type", reference_f1_by_type, entity_cases,
    [Mistake("a prediction is right only with the gold entity's type too: (0, 2, 'ORG') does not "
             "match (0, 2, 'PER')", untyped_f1_by_type),
     Mistake("count over all sentences together (micro average within each type), not per "
             "sentence then averaged", by_sentence_average),
     Mistake("a predicted span is right only in its own sentence: key the spans by sentence",
             lambda g, p: reference_f1_by_type([[s for ss in g for s in ss]],
                                               [[s for ss in p for s in ss]])),
     Mistake("precision = right / predicted, recall = right / gold",
             lambda g, p: [(k, r, pr, f) for k, pr, r, f in reference_f1_by_type(g, p)]),
     Mistake("F1 is the harmonic mean, 2PR/(P+R), not the average",
             lambda g, p: [(k, pr, r, (pr + r) / 2) for k, pr, r, _ in reference_f1_by_type(g, p)]),
     Mistake("return a list of tuples (type, precision, recall, f1) of Python floats, sorted by "
             "type", lambda g, p: [(k, *map(torch.tensor, x)) for k, *x in
                                   reference_f1_by_type(g, p)])],
    hint="for each type (sorted) in gold or pred: right = predicted (sentence, start, end) of that "
         "type also in gold with that type; P = right/predicted, R = right/gold, F1 = 2PR/(P+R); "
         "0.0 when there is nothing to divide by", exact=True,
    forbidden=("bertlab.metrics.span_scores", "bertlab.metrics.entity_scores"))


def toy_scorer(input_ids, attention_mask):  # (N, T), (N, T) -> (N,)
    """A stand-in for BERT + a linear layer: one number per sequence, position-dependent."""
    if input_ids.dim() != 2:
        raise ValueError(f"the scorer takes (N, T) tensors, got shape {tuple(input_ids.shape)}: "
                         "fold the choices into the batch first")
    weights = torch.arange(1, input_ids.size(1) + 1)  # (T,)
    return (input_ids * attention_mask * weights).sum(-1).float()


def choice_cases():
    def case(label, B, K, T):
        mask = torch.ones(B, K, T, dtype=torch.long)
        mask[..., T - 1] = 0
        return Case(label, (toy_scorer, torch.randint(1, 50, (B, K, T)), mask))
    return [case("2 questions, 3 choices", 2, 3, 4),
            case("1 question, 4 choices", 1, 4, 3),
            case("3 questions, 2 choices", 3, 2, 5)]


def reference_choice_logits(scorer, input_ids, attention_mask):
    B, K, T = input_ids.shape
    return scorer(input_ids.view(B * K, T), attention_mask.view(B * K, T)).view(B, K)


choice_logits = Exercise(
    "choice_logits", reference_choice_logits, choice_cases,
    [Mistake("view the scores back as (B, K): row b holds question b's K choices",
             lambda f, x, m: f(x.flatten(0, 1), m.flatten(0, 1))),
     Mistake("the scores come out in (B·K) order, question by question: view(B, K), not "
             "view(K, B).T", lambda f, x, m: f(x.flatten(0, 1), m.flatten(0, 1)).view(
                 x.size(1), x.size(0)).T),
     Mistake("fold (B, K, T) into (B·K, T) without reordering: choices of the same question "
             "stay together", lambda f, x, m: f(x.transpose(0, 1).flatten(0, 1),
                                                m.transpose(0, 1).flatten(0, 1)).view(
                                                    x.size(0), x.size(1)))],
    hint="input_ids.view(B * K, T) (and the mask), score them, then .view(B, K)",
    forbidden=("bertlab.model.BertForMultipleChoice.forward",))


PREDICT_START = torch.tensor([0.0, 3.0, 1.0, 0.0, 2.0])
PREDICT_END = torch.tensor([0.0, 0.0, 2.0, 5.0, 1.0])

predicted_spans = Answer(
    "predicted_spans",
    lambda: [reference_best_span(PREDICT_START, PREDICT_END, n) for n in (2, 3)],
    hint="list every (start, end) with start <= end and end - start + 1 <= max_tokens, add "
         "s[start] + e[end], and keep the largest; answer [(start, end), (start, end)]",
    wrong=[Mistake("the two argmaxes give (1, 3), a span of 3 tokens: with max_tokens = 2 it is "
                   "not allowed", lambda: [(1, 3), (1, 3)]),
           Mistake("max_tokens counts the answer's tokens: with max_tokens = 2, (2, 3) is allowed "
                   "(2 tokens) and (1, 3) is not (3 tokens)", lambda: [(3, 3), (1, 3)]),
           Mistake("max_tokens counts the answer's tokens: with 3, (1, 3) is allowed",
                   lambda: [(2, 3), (2, 3)])])
