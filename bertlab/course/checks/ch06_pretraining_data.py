"""Chapter 6: pretraining data: the checks of exercises/06."""

from __future__ import annotations

import torch

from .framework import Answer, Case, Exercise, Mistake

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")  # never chosen for prediction


def words_of(tokens, skip_special=True):
    """The words of a token list as lists of positions: a '##' piece joins the word before it."""
    words = []
    for i, token in enumerate(tokens):
        if skip_special and token in SPECIAL_TOKENS:
            continue
        if token.startswith("##") and words and words[-1][-1] == i - 1:
            words[-1].append(i)
        else:
            words.append([i])
    return words


def whole_words(tokens, generator, rate=0.15, max_predictions=20, skip_special=True,
                count_words=False, stop_early=False, pieces=False):
    """Whole-word masking as Google's create_pretraining_data.py does it (the keywords change
    one step, for the mistakes)."""
    words = words_of(tokens, skip_special)
    if pieces:  # every piece on its own, as the plain rule does
        words = [[i] for word in words for i in word]
    base = len(words) if count_words else sum(len(word) for word in words)
    n = min(max_predictions, max(1, round(rate * base)))
    chosen = []
    for w in torch.randperm(len(words), generator=generator).tolist():
        if len(chosen) >= n:
            break
        if len(chosen) + len(words[w]) > n:
            if stop_early:
                break
            continue
        chosen += words[w]
    return sorted(chosen)


def reference_whole_word_positions(tokens, generator, rate=0.15, max_predictions=20):
    return whole_words(tokens, generator, rate, max_predictions)


def sentence(words, pieces, pads=0):
    """[CLS] then `words` words, every `pieces`-th of them split into three pieces."""
    tokens = ["[CLS]"]
    for w in range(words):
        tokens += [f"w{w}", f"##a{w}", f"##b{w}"] if w % pieces == 0 else [f"w{w}"]
    return tokens + ["[SEP]", "b", "##c", "[SEP]"] + ["[PAD]"] * pads


def whole_word_cases():
    return [Case("split words, 4 [PAD]", (sentence(12, 3, pads=4),
                                          torch.Generator().manual_seed(1))),
            Case("every word split, rate=0.3", (sentence(8, 1), torch.Generator().manual_seed(2)),
                 dict(rate=0.3)),
            Case("no split words", (sentence(20, 100), torch.Generator().manual_seed(3))),
            Case("a word that does not fit", (["[CLS]", "a", "##b", "##c", "##d", "e", "f",
                                               "[SEP]"], torch.Generator().manual_seed(0)),
                 dict(rate=0.4)),
            Case("'##' right after [SEP] starts a word", (["[CLS]", "x", "[SEP]", "##y", "z",
                                                          "[SEP]"],
                                                         torch.Generator().manual_seed(5)),
                 dict(rate=0.5)),
            Case("the cap, max_predictions=6", (sentence(60, 2), torch.Generator().manual_seed(4)),
                 dict(max_predictions=6)),
            Case("rate=0.9 and max_predictions=5", (sentence(6, 2),
                                                    torch.Generator().manual_seed(6)),
                 dict(rate=0.9, max_predictions=5))]


def wrong_whole_words(**change):
    return lambda tokens, generator, rate=0.15, max_predictions=20: (
        whole_words(tokens, generator, rate, max_predictions, **change))


whole_word_positions = Exercise(
    "whole_word_positions", reference_whole_word_positions, whole_word_cases,
    [Mistake("mask whole words: a '##' piece belongs to the word before it, and a word is chosen "
             "(or not) with all its pieces", wrong_whole_words(pieces=True)),
     Mistake("n counts tokens, not words: n = min(max_predictions, max(1, round(rate × number "
             "of candidate pieces)))", wrong_whole_words(count_words=True)),
     Mistake("a word that would take you past n is skipped, and the next words are tried (a "
             "shorter one may still fit): `continue`, not `break`",
             wrong_whole_words(stop_early=True)),
     Mistake("[CLS], [SEP] and [PAD] are never chosen and belong to no word",
             wrong_whole_words(skip_special=False))],
    hint="words = runs of a piece and the '##' pieces right after it (specials excluded); n = "
         "min(max_predictions, max(1, round(rate × pieces))); go through the words in the order "
         "of torch.randperm(len(words), generator=generator), taking each whole word that still "
         "fits in n; return the positions sorted", exact=True,
    forbidden=("bertlab.data.pretraining.MLMMasker.pick",
               "bertlab.data.pretraining.MLMMasker.take_greedily",
               "bertlab.data.pretraining.MLMMasker.__call__"))


def span_distribution(p=0.2, max_length=10, normalized=True, pile=False, mean_of=None,
                      first=1, as_float=True):
    """SpanBERT's clipped geometric distribution of span lengths, and its mean (the keywords
    change one step, for the mistakes)."""
    lengths = torch.arange(1, max_length + 1, dtype=torch.float64)  # 1, ..., max_length
    weights = p * (1 - p) ** (lengths - 1)  # (max_length,)
    if pile:  # every length past max_length counted as max_length
        weights[-1] = (1 - p) ** (max_length - 1)
    probs = weights / weights.sum() if normalized else weights
    mean = (mean_of(probs) if mean_of else ((lengths - 1 + first) * probs).sum())
    return probs, mean.item() if as_float else mean


def reference_span_length_distribution(p=0.2, max_length=10):
    return span_distribution(p, max_length)


def span_length_cases():
    return [Case("SpanBERT's p=0.2, max_length=10 (the defaults)", ()),
            Case("p=0.5, max_length=4", (0.5, 4)),
            Case("max_length=1: every span is one word", (), dict(max_length=1)),
            Case("p=1.0, max_length=3", (1.0, 3)),
            Case("p=0.05, max_length=30", (0.05, 30))]


def wrong_span_distribution(**change):
    return lambda p=0.2, max_length=10: span_distribution(p, max_length, **change)


span_length_distribution = Exercise(
    "span_length_distribution", reference_span_length_distribution, span_length_cases,
    [Mistake("clipping renormalises: divide the weights p·(1 − p)^(ℓ − 1) of ℓ = 1..max_length "
             "by their sum, so that the probabilities add up to 1",
             wrong_span_distribution(normalized=False)),
     Mistake("the lengths past max_length are dropped and the rest renormalised, not piled onto "
             "max_length: P(max_length) ∝ p·(1 − p)^(max_length − 1) like every other length",
             wrong_span_distribution(pile=True)),
     Mistake("the mean length is Σ ℓ·P(ℓ) over ℓ = 1..max_length, not the mean of the "
             "probabilities", wrong_span_distribution(mean_of=lambda probs: probs.mean())),
     Mistake("lengths start at 1: probs[0] is P(ℓ = 1), so the mean is Σ ℓ·P(ℓ) with ℓ counted "
             "from 1, not from 0", wrong_span_distribution(first=0)),
     Mistake("return the mean as a Python float (.item())",
             wrong_span_distribution(as_float=False))],
    hint="probs[ℓ − 1] = p·(1 − p)^(ℓ − 1) / Σ_{m=1..max_length} p·(1 − p)^(m − 1), a "
         "(max_length,) float tensor; mean = Σ ℓ·probs[ℓ − 1], a Python float",
    returns=("probs", "mean"), exact=True)


def spans(tokens, lengths, anchors, rate=0.15, max_predictions=20, skip_special=True,
          pieces=False, count_words=False, rounding=int, jump=False, wrap=False,
          whole_span=False, ordered=True):
    """SpanBERT-style span masking over whole words, from given proposals (the keywords change
    one step, for the mistakes)."""
    words = words_of(tokens, skip_special)
    if pieces:  # every piece a word of its own
        words = [[i] for word in words for i in word]
    base = len(words) if count_words else sum(len(word) for word in words)
    n = min(max_predictions, max(1, round(rate * base)))
    chosen, taken = set(), []  # word indexes; positions, in the order taken
    for length, anchor in zip(lengths, anchors):
        start = rounding(anchor * len(words))
        span, size = [], 0
        for w in range(start, start + length):
            if w >= len(words):
                if not wrap:
                    break
                w %= len(words)
            if w in chosen or w in span:
                if jump:
                    continue
                break
            if len(taken) + size + len(words[w]) > n:
                break
            span.append(w)
            size += len(words[w])
        if whole_span and len(span) < min(length, len(words) - start):
            continue  # all of the span or none of it
        chosen.update(span)
        taken += [i for w in span for i in words[w]]
    return sorted(taken) if ordered else taken


def reference_span_mask_positions(tokens, lengths, anchors, rate=0.15, max_predictions=20):
    return spans(tokens, lengths, anchors, rate, max_predictions)


def span_cases():
    def proposals(k, p=0.2, max_length=10):
        probs = span_distribution(p, max_length)[0]
        lengths = (torch.multinomial(probs, k, replacement=True) + 1).tolist()
        return lengths, torch.rand(k).tolist()

    eight = ["[CLS]", "a", "b", "c", "d", "[SEP]", "e", "f", "g", "h", "[SEP]"]  # 8 words
    return [Case("split words, 4 [PAD], 30 proposals",
                 (sentence(30, 3, pads=4), *proposals(30))),
            Case("no split words, rate=0.3", (sentence(25, 100), *proposals(20)),
                 dict(rate=0.3)),
            Case("a span runs into a chosen word and stops there", (eight, [1, 4, 3],
                                                                    [0.5, 0.25, 0.0]),
                 dict(rate=0.9)),
            Case("a span past the last word ends there; one that starts on a chosen word adds "
                 "nothing", (eight, [5, 2, 1], [0.8, 0.875, 0.1]), dict(rate=0.6)),
            Case("anchor 0.99 starts at the last word", (eight, [1, 3], [0.99, 0.3]),
                 dict(rate=0.5)),
            Case("the budget cuts a span short: a split word that does not fit ends it",
                 (["[CLS]", "x", "y", "un", "##aff", "##able", "z", "[SEP]"], [4, 2],
                  [0.2, 0.7]), dict(rate=0.5)),
            Case("the cap, max_predictions=5", (sentence(40, 2), *proposals(25)),
                 dict(max_predictions=5)),
            Case("rate=0.5 and max_predictions=6", (sentence(12, 2, pads=2), *proposals(12)),
                 dict(rate=0.5, max_predictions=6)),
            Case("only special tokens: no words", (["[CLS]", "[SEP]", "[SEP]", "[PAD]"], [2],
                                                    [0.5]))]


def wrong_spans(**change):
    return lambda tokens, lengths, anchors, rate=0.15, max_predictions=20: (
        spans(tokens, lengths, anchors, rate, max_predictions, **change))


span_mask_positions = Exercise(
    "span_mask_positions", reference_span_mask_positions, span_cases,
    [Mistake("a span is made of whole words: its length counts words, and each word brings all "
             "its '##' pieces", wrong_spans(pieces=True)),
     Mistake("the budget counts tokens, not words: n = min(max_predictions, max(1, round(rate × "
             "number of candidate pieces)))", wrong_spans(count_words=True)),
     Mistake("a span's first word is int(anchor × number of words), rounded down, not to the "
             "nearest word", wrong_spans(rounding=round)),
     Mistake("a span is consecutive: at a word that is already chosen it ends, it does not "
             "jump over it and go on", wrong_spans(jump=True)),
     Mistake("a span that runs past the last word ends there: it does not wrap round to the "
             "first word", wrong_spans(wrap=True)),
     Mistake("when a span cannot be taken whole, take its words up to the one that is chosen, "
             "missing or over the budget; don't drop the whole span", wrong_spans(whole_span=True)),
     Mistake("[CLS], [SEP] and [PAD] are never chosen and belong to no word",
             wrong_spans(skip_special=False)),
     Mistake("return the positions sorted", wrong_spans(ordered=False))],
    hint="words as in section 1; n = min(max_predictions, max(1, round(rate × pieces))); for "
         "each proposal, start = int(anchor × len(words)) and take words start, start + 1, ... "
         "(at most `length` of them), stopping at the end of the words, at a word already "
         "chosen, or at one whose pieces would take you past n; return the positions sorted",
    exact=True,
    forbidden=("bertlab.data.pretraining.MLMMasker.pick",
               "bertlab.data.pretraining.MLMMasker.take_greedily",
               "bertlab.data.pretraining.MLMMasker.__call__"))


def expected_masks(rounded=True, specials=True, keep=0.8):
    """8 sequences of 64 tokens, 3 of them special; 15%, at most 20, of the candidates."""
    candidates = 64 - 3 if specials else 64
    n = min(20, max(1, round(0.15 * candidates) if rounded else 0.15 * candidates))
    return round(8 * n * keep, 2)


expected_mask_count = Answer(
    "expected_mask_count", lambda: expected_masks(), tolerance=0.05,
    hint="per sequence: n = min(20, max(1, round(0.15 × candidates))), the candidates being the "
         "tokens that are not [CLS] or [SEP]; 80% of the chosen positions get [MASK]",
    wrong=[Mistake("[CLS] and the two [SEP] are not candidates: 61 of the 64 tokens are",
                   lambda: expected_masks(specials=False)),
           Mistake("n is a whole number of positions per sequence: round(0.15 × 61)",
                   lambda: expected_masks(rounded=False)),
           Mistake("only 80% of the chosen positions show [MASK]; 10% get a random token and 10% "
                   "stay as they are", lambda: expected_masks(keep=1.0))])
