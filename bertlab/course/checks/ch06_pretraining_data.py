"""Chapter 6: pretraining data: the checks of exercises/06."""

from __future__ import annotations

import torch

from ...model import IGNORE_INDEX
from .framework import Answer, Case, Exercise, Mistake

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")  # never chosen for prediction


def reference_choose_mask_positions(tokens, generator, rate=0.15, max_predictions=20):
    candidates = [i for i, token in enumerate(tokens) if token not in SPECIAL_TOKENS]
    n = min(max_predictions, max(1, round(rate * len(candidates))), len(candidates))
    order = torch.randperm(len(candidates), generator=generator)
    return sorted(candidates[i] for i in order[:n].tolist())


def wrong_positions(skip_special=True, count_all=False, rounding=round, shuffle=True,
                    ordered=True):
    """The reference with one step done wrong, chosen by the flags (for the mistakes)."""
    def choose(tokens, generator, rate=0.15, max_predictions=20):
        candidates = [i for i, token in enumerate(tokens)
                      if not (skip_special and token in SPECIAL_TOKENS)]
        base = len(tokens) if count_all else len(candidates)
        n = min(max_predictions, max(1, rounding(rate * base)), len(candidates))
        order = (torch.randperm(len(candidates), generator=generator).tolist() if shuffle
                 else range(len(candidates)))
        chosen = [candidates[i] for i in order[:n]]
        return sorted(chosen) if ordered else chosen
    return choose


def positions_cases():
    def sentence(n, pads=0):
        return ["[CLS]", *(f"w{i}" for i in range(n - 1)), "[SEP]", "b", "[SEP]"] + ["[PAD]"] * pads
    return [Case("10 words and 8 [PAD]", (sentence(10, pads=8), torch.Generator().manual_seed(1))),
            Case("17 words", (sentence(17), torch.Generator().manual_seed(2))),
            Case("3 words, rate=0.5", (sentence(3), torch.Generator().manual_seed(3)),
                 dict(rate=0.5)),
            Case("200 words: the cap", (sentence(200), torch.Generator().manual_seed(4)))]


choose_mask_positions = Exercise(
    "choose_mask_positions", reference_choose_mask_positions, positions_cases,
    [Mistake("[CLS], [SEP] and [PAD] are never chosen: only the other positions are candidates",
             wrong_positions(skip_special=False)),
     Mistake("count the candidates only: n = round(rate × len(candidates)), not of all tokens",
             wrong_positions(count_all=True)),
     Mistake("round to the nearest whole number (round), don't truncate (int)",
             wrong_positions(rounding=int)),
     Mistake("shuffle the candidates with torch.randperm(len(candidates), generator=generator) "
             "and take the first n", wrong_positions(shuffle=False)),
     Mistake("return the positions sorted", wrong_positions(ordered=False))],
    hint="candidates = non-special positions; n = min(max_predictions, max(1, round(rate × "
         "len(candidates)))); shuffle with torch.randperm(..., generator=generator); the first n, "
         "sorted", exact=True,
    forbidden=("bertlab.data.pretraining.MLMMasker.pick",
               "bertlab.data.pretraining.MLMMasker.__call__"))


def reference_mask_tokens(ids, positions, draws, random_ids, mask_id):
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)  # (T,), (T,)
    labels[positions] = ids[positions]
    inputs[positions] = torch.where(draws < 0.8, mask_id,
                                    torch.where(draws < 0.9, random_ids, ids[positions]))
    return inputs, labels


def mask_tokens_cases():
    ids = torch.randint(5, 100, (12,))
    positions = torch.tensor([1, 4, 6, 7, 9, 10])
    random_ids = torch.randint(100, 200, (6,))
    draws = torch.tensor([0.1, 0.85, 0.95, 0.8, 0.9, 0.5])
    return [Case("mask, random, keep and the boundaries 0.8, 0.9",
                 (ids, positions, draws, random_ids, 3)),
            Case("all [MASK]", (ids, positions[:3], torch.zeros(3), random_ids[:3], 4)),
            Case("one position, kept", (ids[:5], torch.tensor([2]), torch.tensor([0.99]),
                                        random_ids[:1], 3))]


def random_and_keep_swapped(ids, positions, draws, random_ids, mask_id):
    inputs, labels = reference_mask_tokens(ids, positions, draws, random_ids, mask_id)
    inputs[positions] = torch.where(draws < 0.8, mask_id,
                                    torch.where(draws < 0.9, ids[positions], random_ids))
    return inputs, labels


def labels_wrong(make_labels):
    def mask(ids, positions, draws, random_ids, mask_id):
        inputs, _ = reference_mask_tokens(ids, positions, draws, random_ids, mask_id)
        return inputs, make_labels(ids, inputs, positions)
    return mask


mask_tokens = Exercise(
    "mask_tokens", reference_mask_tokens, mask_tokens_cases,
    [Mistake("the labels are -100 (ignored) everywhere except at the chosen positions",
             labels_wrong(lambda ids, inputs, p: ids.clone())),
     Mistake("the label is the *original* token, the one the model must recover, not what "
             "replaced it", labels_wrong(
                 lambda ids, inputs, p: torch.full_like(ids, IGNORE_INDEX).index_put((p,),
                                                                                    inputs[p]))),
     Mistake("positions that are not predicted get the label -100, not 0", labels_wrong(
         lambda ids, inputs, p: torch.zeros_like(ids).index_put((p,), ids[p]))),
     Mistake("0.8 <= draw < 0.9 takes the random token, draw >= 0.9 keeps the original",
             random_and_keep_swapped),
     Mistake("the bounds are strict: [MASK] if draw < 0.8, random if draw < 0.9",
             lambda ids, p, d, r, m: reference_mask_tokens(ids, p, d - 1e-6, r, m))],
    hint="copy ids; at each chosen position i: draw < 0.8 -> mask_id, draw < 0.9 -> "
         "random_ids[i], else keep; labels = -100 except the original ids at the positions",
    returns=("input_ids", "labels"),
    forbidden=("bertlab.data.pretraining.MLMMasker.corrupt",
               "bertlab.data.pretraining.MLMMasker.__call__",
               "bertlab.data.pretraining.mask_statically"))


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


def whole_word_cases():
    def sentence(words, pieces, pads=0):
        """[CLS] then `words` words, every `pieces`-th of them split into three pieces."""
        tokens = ["[CLS]"]
        for w in range(words):
            tokens += [f"w{w}", f"##a{w}", f"##b{w}"] if w % pieces == 0 else [f"w{w}"]
        return tokens + ["[SEP]", "b", "##c", "[SEP]"] + ["[PAD]"] * pads
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
                 dict(max_predictions=6))]


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
