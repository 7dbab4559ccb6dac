"""Chapter 9: pairs, tokens, spans: the checks of exercises/09."""

from __future__ import annotations

import torch
from torch import randn

from ... import metrics
from .framework import Answer, Case, Exercise, Mistake

# ----------------------------------------------------------------------------------------------
# 1. SQuAD 2.0 decoding: the best span inside the context, or no answer


def decode(start_logits, end_logits, token_type_ids, max_tokens=30, null_threshold=0.0, *,
           keep_sep=False, anywhere=False, longer=0, null="beats", none=(0, 0), as_tensors=False):
    """The best context span (start, end), or `none` (the span of [CLS]) when the null score
    s[0] + e[0] beats it by more than null_threshold; the keywords break one rule each (for the
    mistakes)."""
    s, e = start_logits.tolist(), end_logits.tolist()
    context = [t for t, kind in enumerate(token_type_ids.tolist()) if kind == 1]
    context = list(range(len(s))) if anywhere else context if keep_sep else context[:-1]
    best, best_score = None, float("-inf")
    for i in context:
        for j in context:
            if i <= j < i + max_tokens + longer and s[i] + e[j] > best_score:
                best, best_score = (i, j), s[i] + e[j]
    margin = s[0] + e[0] - best_score  # how far the null answer is ahead of the best span
    no_answer = {"beats": margin > null_threshold, "never": False,
                 "flipped": -margin > null_threshold, "sign": margin > -null_threshold}[null]
    if no_answer:
        return none
    return tuple(map(torch.tensor, best)) if as_tensors else best


def reference_answer_or_null(start_logits, end_logits, token_type_ids, max_tokens=30,
                             null_threshold=0.0):
    return decode(start_logits, end_logits, token_type_ids, max_tokens, null_threshold)


def qa_types(question, context, pads=0):
    """[CLS] question [SEP] context [SEP] [PAD]...: token types 0, 1 for the context and its
    [SEP], 0 for padding."""
    return torch.tensor([0] * (question + 2) + [1] * (context + 1) + [0] * pads)


def null_cases():
    def logits(*values):
        return torch.tensor(values)
    #           CLS  q    q    q    SEP  c    c    c    c    SEP
    s = logits(-1.0, 4.0, 3.0, 0.0, 0.0, 0.5, 2.0, 0.0, 0.5, 0.0)
    e = logits(-1.0, 0.0, 4.0, 3.0, 0.0, 0.0, 0.5, 1.5, 0.0, 0.0)
    types = qa_types(3, 4)
    sep = e.clone()
    sep[9] = 3.0  # the final [SEP] as the likeliest end
    padded_s, padded_e = torch.cat([s, logits(5.0, 5.0)]), torch.cat([e, logits(5.0, 5.0)])
    #               CLS  q    SEP  c    c    c    c    SEP
    long_s = logits(0.0, 0.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0)
    long_e = logits(0.0, 0.0, 0.0, 0.0, 1.5, 3.0, 0.0, 0.0)
    null_s, null_e = s.clone(), e.clone()
    null_s[0], null_e[0] = 2.0, 2.0  # null 4.0 against the best span's 3.5
    T = 24
    return [Case("the question scores higher than the context", (s, e, types)),
            Case("a high end logit on the final [SEP]", (s, sep, types)),
            Case("padding after the final [SEP]", (padded_s, padded_e, qa_types(3, 4, pads=2)),
                 dict(max_tokens=30)),
            Case("max_tokens=2: the best span has 3 tokens", (long_s, long_e, qa_types(1, 4)),
                 dict(max_tokens=2)),
            Case("the null answer wins (null_threshold=0.0)", (null_s, null_e, types),
                 dict(max_tokens=30, null_threshold=0.0)),
            Case("null ahead by less than null_threshold=1.5: an answer", (null_s, null_e, types),
                 dict(null_threshold=1.5)),
            Case("null_threshold=-6.0: the span beats null by 5.5, not by more than 6",
                 (s, e, types), dict(max_tokens=30, null_threshold=-6.0)),
            Case("a context of one token", (logits(0.0, 1.0, 0.0, 2.0, 0.0),
                                            logits(0.0, 1.0, 0.0, 1.0, 0.0), qa_types(1, 1))),
            Case("random, T=24, 8 question tokens", (randn(T), randn(T), qa_types(8, 12, pads=1)),
                 dict(max_tokens=5, null_threshold=0.5))]


def wrong_decode(**change):
    return lambda start_logits, end_logits, token_type_ids, max_tokens=30, null_threshold=0.0: (
        decode(start_logits, end_logits, token_type_ids, max_tokens, null_threshold, **change))


answer_or_null = Exercise(
    "answer_or_null", reference_answer_or_null, null_cases,
    [Mistake("the answer must lie in the context: start and end both among the tokens of token "
             "type 1, not anywhere in the sequence",
             wrong_decode(anywhere=True)),
     Mistake("the last token of type 1 is the final [SEP], not part of the context: leave it out",
             wrong_decode(keep_sep=True)),
     Mistake("max_tokens counts the answer's tokens: end - start + 1 <= max_tokens",
             wrong_decode(longer=1)),
     Mistake("there is no answer when the null score s[0] + e[0] beats the best span's score by "
             "more than null_threshold: return (0, 0) then",
             wrong_decode(null="never")),
     Mistake("the other way round: (0, 0) when null − best > null_threshold (the null answer "
             "ahead), not when best − null is",
             wrong_decode(null="flipped")),
     Mistake("mind the threshold's sign: (0, 0) when s[0] + e[0] − best > null_threshold, i.e. "
             "null > best + null_threshold",
             wrong_decode(null="sign")),
     Mistake("no answer is the span (0, 0) of [CLS], as in BERT's SQuAD 2.0 decoder: a tuple, "
             "not None", wrong_decode(none=None)),
     Mistake("return the span as a tuple of two Python ints (`.item()`), not tensors",
             wrong_decode(as_tensors=True))],
    hint="context = the positions of token type 1 without the last one (the final [SEP]); best = "
         "the (i, j) of the context with i <= j <= i + max_tokens - 1 and the largest s[i] + e[j]; "
         "return (0, 0) if s[0] + e[0] - that score > null_threshold, else (i, j), as two ints",
    exact=True, forbidden=("bertlab.metrics.best_span",))


def reference_best_span(start_logits, end_logits, max_tokens):  # the whole sequence is context
    return metrics.best_span(start_logits, end_logits, 0, start_logits.size(0) - 1, max_tokens)


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


# ----------------------------------------------------------------------------------------------
# 2. BIO to BIOES


def read_bio(tags, typed=True, stray_i=True, split_b=True):
    """BIO tags to (start, end, type) spans as the CoNLL script reads them, end exclusive, with
    one rule broken by a flag (for the mistakes)."""
    spans, current = [], None  # current: (type, start)
    for i, tag in enumerate([*tags, "O"]):
        kind, _, label = tag.partition("-")
        continues = kind == "I" and current is not None and (label == current[0] or not typed)
        continues |= kind == "B" and current is not None and not split_b and label == current[0]
        if current is not None and not continues:
            spans.append((current[1], i, current[0]))
            current = None
        if current is None and (kind == "B" or (kind == "I" and stray_i)):
            current = (label, i)
    return spans


def bioes(tags, single="S", last="E", **reading):
    """The BIOES tags of the entities read_bio(tags, **reading) finds: S-X for a one-token
    entity, B-X I-X ... E-X for a longer one, O elsewhere."""
    out = ["O"] * len(tags)
    for start, end, kind in read_bio(tags, **reading):
        out[start:end] = [f"I-{kind}"] * (end - start)
        out[start], out[end - 1] = f"B-{kind}", f"{last}-{kind}"
        if end - start == 1:
            out[start] = f"{single}-{kind}"
    return out


def local_bioes(tags, stray_starts=True, typed=True):
    """Each tag from itself and its neighbours: an I-X continues the tag before it if that is
    B-X or I-X. With stray_starts=False only a B- starts an entity; with typed=False an I- of
    any type continues one (for the mistakes)."""
    def continues(before, tag):
        (kind, _, label), (was, _, was_label) = tag.partition("-"), before.partition("-")
        return kind == "I" and was in ("B", "I") and (label == was_label or not typed)
    out = []
    for i, tag in enumerate(tags):
        kind, _, label = tag.partition("-")
        if kind == "O":
            out.append("O")
            continue
        starts = not continues(tags[i - 1] if i else "O", tag) if stray_starts else kind == "B"
        ends = not continues(tag, tags[i + 1] if i + 1 < len(tags) else "O")
        prefix = {(True, True): "S", (True, False): "B", (False, True): "E", (False, False): "I"}
        out.append(f"{prefix[starts, ends]}-{label}")
    return out


def bioes_cases():
    return [Case("two entities, one of them one token", (["B-PER", "I-PER", "O", "B-LOC"],)),
            Case("three tokens at the end", (["O", "B-ORG", "I-ORG", "I-ORG"],)),
            Case("B-X B-X: two entities", (["B-PER", "B-PER", "O"],)),
            Case("I-LOC after B-PER starts a new entity", (["B-PER", "I-LOC", "I-LOC", "O"],)),
            Case("an I- with nothing before it", (["O", "I-MISC", "I-MISC", "O", "I-PER"],)),
            Case("O between entities of one type", (["B-LOC", "O", "I-LOC", "O", "B-LOC",
                                                     "I-LOC", "I-LOC"],))]


bio_to_bioes = Exercise(
    "bio_to_bioes", lambda tags: bioes(tags), bioes_cases,
    [Mistake("a one-token entity is S-X, not B-X", lambda tags: bioes(tags, single="B")),
     Mistake("the last token of an entity of two or more tokens is E-X, not I-X",
             lambda tags: bioes(tags, last="I")),
     Mistake("an I-X that continues nothing (after O, at the start, or after another type) starts "
             "an X entity: B-X or S-X", lambda tags: local_bioes(tags, stray_starts=False)),
     Mistake("an I- continues an entity only of the same type: in B-PER I-LOC, B-PER is a "
             "one-token entity (S-PER) and I-LOC starts a LOC one",
             lambda tags: bioes(tags, typed=False)),
     Mistake("every B- starts a new entity, even right after one of the same type: B-PER B-PER is "
             "S-PER S-PER", lambda tags: bioes(tags, split_b=False)),
     Mistake("compare the types when you look at the neighbours: I-LOC after B-PER neither "
             "continues the PER entity nor makes it longer (S-PER B-LOC ...)",
             lambda tags: local_bioes(tags, typed=False))],
    hint="read the entities as the chapter does (B-X starts one, I-X continues an open X entity "
         "or else starts one, O and the end close it), then tag each: S-X if one token, else "
         "B-X, I-X, ..., E-X; O elsewhere; return a list of strings as long as tags",
    exact=True, forbidden=("bertlab.metrics.entity_spans", "bertlab.metrics.entity_scores"))


# ----------------------------------------------------------------------------------------------
# 3. Lenient (overlap) entity F1


def lenient(gold, pred, *, touch=False, typed=True, same_span=False, by_sentence=True,
            recall_of_pred=False, mean=False):
    """(precision, recall, f1) with overlap matching; the keywords break one rule each."""
    def match(a, b):
        if typed and a[2] != b[2]:
            return False
        if same_span:
            return a[:2] == b[:2]
        return a[0] <= b[1] and b[0] <= a[1] if touch else a[0] < b[1] and b[0] < a[1]
    if not by_sentence:
        gold, pred = [[s for spans in gold for s in spans]], [[s for spans in pred for s in spans]]
    found = sum(any(match(p, g) for g in gs) for gs, ps in zip(gold, pred) for p in ps)
    covered = sum(any(match(g, p) for p in ps) for gs, ps in zip(gold, pred) for g in gs)
    covered = found if recall_of_pred else covered
    predicted, true = sum(map(len, pred)), sum(map(len, gold))
    precision = found / predicted if predicted else 0.0
    recall = covered / true if true else 0.0
    if mean:
        return precision, recall, (precision + recall) / 2
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def overlap_cases():
    return [Case("a name cut short still counts",
                 ([[(0, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC")]],
                  [[(0, 2, "PER"), (3, 4, "PER"), (6, 7, "LOC"), (8, 9, "MISC")]])),
            Case("touching spans share no token", ([[(0, 2, "PER"), (5, 6, "LOC")]],
                                                   [[(2, 4, "PER"), (5, 7, "LOC")]])),
            Case("the right place with the wrong type", ([[(0, 2, "PER"), (4, 6, "LOC")]],
                                                         [[(0, 2, "ORG"), (4, 5, "LOC")]])),
            Case("one long prediction over two gold names",
                 ([[(0, 2, "PER"), (2, 4, "PER")], [(1, 3, "LOC")]],
                  [[(0, 4, "PER")], [(0, 1, "LOC"), (1, 2, "LOC")]])),
            Case("a span right in the wrong sentence", ([[(0, 1, "PER")], []],
                                                        [[], [(0, 1, "PER")]])),
            Case("nothing predicted", ([[(1, 3, "LOC")]], [[]])),
            Case("nothing to find, one spurious entity", ([[]], [[(0, 1, "PER")]])),
            Case("no entities at all", ([[], []], [[], []]))]


overlap_f1 = Exercise(
    "overlap_f1", lambda gold, pred: lenient(gold, pred), overlap_cases,
    [Mistake("lenient matching: a prediction counts when it shares at least one token with a gold "
             "entity of its type, not only when start and end are the same",
             lambda g, p: lenient(g, p, same_span=True)),
     Mistake("end is exclusive: (0, 2) and (2, 4) share no token; two spans overlap when "
             "start_a < end_b and start_b < end_a", lambda g, p: lenient(g, p, touch=True)),
     Mistake("a match needs the same type too: (0, 2, 'ORG') does not match (0, 2, 'PER')",
             lambda g, p: lenient(g, p, typed=False)),
     Mistake("recall counts the gold entities that some prediction overlaps (one long prediction "
             "can find two), not the predictions that match",
             lambda g, p: lenient(g, p, recall_of_pred=True)),
     Mistake("a span matches only in its own sentence: compare gold[n] with pred[n]",
             lambda g, p: lenient(g, p, by_sentence=False)),
     Mistake("F1 is the harmonic mean, 2PR/(P+R), not the average",
             lambda g, p: lenient(g, p, mean=True)),
     Mistake("return a tuple of three Python floats, not tensors",
             lambda g, p: tuple(map(torch.tensor, lenient(g, p))))],
    hint="precision = predictions that overlap a gold entity of the same type in the same "
         "sentence / predictions; recall = gold entities that a prediction overlaps / gold "
         "entities; F1 = 2PR/(P+R); 0.0 when there is nothing to divide by; return "
         "(precision, recall, f1)", exact=True,
    forbidden=("bertlab.metrics.span_scores", "bertlab.metrics.entity_scores"))


# ----------------------------------------------------------------------------------------------
# 4. Multiple choice: the (B, K, T) inputs of K pairs per question


def pairs(contexts, choices, cls_id, sep_id, pad_id, *, middle=0, last=1, pad_type=0,
          pad_mask=0, swap=False, fill=None, by_choice=False):
    """(input_ids, token_type_ids, attention_mask), each (B, K, T): [CLS] context [SEP] choice
    [SEP]; the keywords break one rule each (for the mistakes)."""
    B, K = len(contexts), len(choices[0])
    order = [(b, k) for k in range(K) for b in range(B)] if by_choice else \
        [(b, k) for b in range(B) for k in range(K)]
    rows = []
    for b, k in order:
        first, second = (choices[b][k], contexts[b]) if swap else (contexts[b], choices[b][k])
        ids = [cls_id, *first, sep_id, *second, sep_id]
        types = [0] * (len(first) + 1) + [middle] + [1] * len(second) + [last]
        rows.append((ids, types))
    T = max(len(ids) for ids, _ in rows)
    pad = pad_id if fill is None else fill
    input_ids = torch.tensor([ids + [pad] * (T - len(ids)) for ids, _ in rows])
    token_types = torch.tensor([types + [pad_type] * (T - len(types)) for _, types in rows])
    mask = torch.tensor([[1] * len(ids) + [pad_mask] * (T - len(ids)) for ids, _ in rows])
    return tuple(x.view(B, K, T) for x in (input_ids, token_types, mask))


def pair_cases():
    return [Case("2 questions, 3 choices of different lengths",
                 ([[5, 6, 7], [8]], [[[9], [10, 11], [12, 13, 14]], [[15, 16], [17], [18, 19]]],
                  101, 102, 0)),
            Case("1 question, 4 choices, [PAD] is id 7",
                 ([[20, 21]], [[[30, 31, 32], [33], [34, 35], [36, 37, 38, 39]]], 1, 2, 7)),
            Case("3 questions, 2 choices, all the same length (no padding)",
                 ([[40], [41], [42]], [[[50, 51], [52, 53]], [[54, 55], [56, 57]],
                                       [[58, 59], [60, 61]]], 101, 102, 0)),
            Case("an empty choice", ([[70, 71, 72]], [[[80], [], [81, 82]]], 101, 102, 0))]


pair_choices = Exercise(
    "pair_choices", lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad), pair_cases,
    [Mistake("the context comes first, in segment 0: [CLS] context [SEP] choice [SEP]",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, swap=True)),
     Mistake("the [SEP] after the context belongs to segment 0, with [CLS] and the context",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, middle=1)),
     Mistake("the [SEP] that ends the choice belongs to segment 1, with the choice",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, last=0)),
     Mistake("padding has token type 0", lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad,
                                                                           pad_type=1)),
     Mistake("attention_mask is 0 on the padding (1 only on the pair's own tokens)",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, pad_mask=1)),
     Mistake("pad input_ids with pad_id, not 0",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, fill=0)),
     Mistake("[b, k] holds question b's choice k: build the pairs question by question (b, then "
             "k) before the view as (B, K, T)",
             lambda c, x, cls, sep, pad: pairs(c, x, cls, sep, pad, by_choice=True))],
    hint="pair (b, k) is [cls_id] + contexts[b] + [sep_id] + choices[b][k] + [sep_id], token types "
         "0 up to the first [SEP] and 1 after it; pad every pair at its end to the longest of all "
         "B·K (pad_id, type 0, mask 0); return three (B, K, T) long tensors",
    returns=("input_ids", "token_type_ids", "attention_mask"),
    forbidden=("bertlab.data.tasks.stack", "bertlab.data.tasks.encode_choices"))
