"""Chapter 1: tokens: the checks of exercises/01."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordPiece

from .framework import Answer, Case, Exercise, Mistake

VOCAB = {"[UNK]", "un", "##aff", "##able", "play", "##ing", "##er", "##s", "p", "##l", "##a",
         "##y", "the", "them", "##m", "a", "u", "##n"}


def reference_wordpiece(word, vocab, unk="[UNK]"):
    """The `tokenizers` library's WordPiece on the same vocabulary."""
    ids = {piece: i for i, piece in enumerate(sorted(set(vocab) | {unk}))}
    return Tokenizer(WordPiece(ids, unk_token=unk)).encode(word).tokens


def wrong_wordpiece(longest=True, prefix="##", whole_word_unk=True):
    """Greedy WordPiece with one thing wrong, chosen by the flags."""
    def tokenize(word, vocab, unk="[UNK]"):
        pieces, start = [], 0
        while start < len(word):
            ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
            mark = prefix if start else ""
            end = next((end for end in ends if mark + word[start:end] in vocab), None)
            if end is None:
                return [unk] if whole_word_unk else pieces + [unk]
            pieces.append(mark + word[start:end])
            start = end
        return pieces
    return tokenize


wordpiece = Exercise(
    "wordpiece", reference_wordpiece,
    lambda: [Case(word, (word, VOCAB)) for word in
             ("unaffable", "playing", "players", "them", "a", "xyz", "playx")],
    [Mistake("start from the longest piece in the vocabulary and shorten it, not the shortest",
             wrong_wordpiece(longest=False)),
     Mistake("pieces after the first are looked up, and returned, with the '##' prefix",
             wrong_wordpiece(prefix="")),
     Mistake("when no piece matches, the *whole word* becomes [UNK], not just the rest of it",
             wrong_wordpiece(whole_word_unk=False))],
    hint="at each position take the longest piece in the vocabulary ('##' + piece after the "
         "first), then continue after it; if none matches, return [unk]", exact=True,
    forbidden=("bertlab.tokenization.encode", "tokenizers.Tokenizer.encode",
               "tokenizers.Tokenizer.encode_batch"))


def reference_build_inputs(tokens_a, tokens_b=None):
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, "[SEP]"]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


def build_inputs_cases():
    return [Case("a pair", (["the", "cat"], ["it", "sat", "down"])),
            Case("one sentence", (["hello", "world"],)),
            Case("a pair of one-token sentences", (["yes"], ["no"]))]


def last_sep_in_segment_0(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    return tokens, segments[:-1] + [0]


def first_sep_in_segment_1(tokens_a, tokens_b=None):
    tokens, segments = reference_build_inputs(tokens_a, tokens_b)
    if tokens_b is not None:
        segments[len(tokens_a) + 1] = 1
    return tokens, segments


build_inputs = Exercise(
    "build_inputs", reference_build_inputs, build_inputs_cases,
    [Mistake("the final [SEP] belongs to sentence B: its segment id is 1", last_sep_in_segment_0),
     Mistake("the [SEP] after A closes A: its segment id is 0", first_sep_in_segment_1),
     Mistake("every sentence ends with [SEP], the last one too",
             lambda a, b=None: tuple(x[:-1] for x in reference_build_inputs(a, b)))],
    hint="[CLS] A [SEP] get segment 0, B [SEP] get segment 1; one sentence is [CLS] A [SEP]",
    returns=("tokens", "segment_ids"), exact=True,
    forbidden=("bertlab.tokenization.encode", "tokenizers.Tokenizer.encode",
               "tokenizers.Tokenizer.encode_batch", "tokenizers.Tokenizer.post_process"))


def reference_pad_batch(sequences, pad_id=0, multiple_of=1):
    longest = max(len(s) for s in sequences)
    T = -(-longest // multiple_of) * multiple_of  # the longest length, rounded up
    input_ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in sequences])  # (B, T)
    attention_mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences])  # (B, T)
    return input_ids, attention_mask


def pad_left(sequences, pad_id=0, multiple_of=1):
    ids, mask = reference_pad_batch([s[::-1] for s in sequences], pad_id, multiple_of)
    return ids.flip(1), mask.flip(1)


def padded_to(length):
    """Pads to the longest length rounded by `length(longest, multiple_of)` (for the mistakes)."""
    def pad(sequences, pad_id=0, multiple_of=1):
        T = length(max(len(s) for s in sequences), multiple_of)
        return (torch.tensor([s + [pad_id] * (T - len(s)) for s in sequences]),
                torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences]))
    return pad


pad_batch = Exercise(
    "pad_batch", reference_pad_batch,
    lambda: [Case("three lengths", ([[101, 7, 8, 102], [101, 9, 102], [101, 5, 6, 4, 102]],)),
             Case("batch of 1", ([[101, 7, 102]],)),
             Case("equal lengths, pad_id=3", ([[1, 2], [4, 5]], 3)),
             Case("pad_id=3", ([[1, 2, 9], [4]], 3)),
             Case("longest 5, multiple_of=8", ([[1, 2, 3, 4, 5], [6, 7]], 0, 8)),
             Case("longest 8 already a multiple of 4", ([[1] * 8, [2] * 3], 0, 4)),
             Case("longest 9, multiple_of=4, pad_id=2", ([[5] * 9], 2, 4))],
    [Mistake("the attention mask is 1 for real tokens and 0 for padding, not the other way round",
             lambda s, pad_id=0, m=1: (reference_pad_batch(s, pad_id, m)[0],
                                       1 - reference_pad_batch(s, pad_id, m)[1])),
     Mistake("pad on the right: the tokens start at position 0", pad_left),
     Mistake("return the mask as integers (torch.long), 1 = token, 0 = padding",
             lambda s, pad_id=0, m=1: (reference_pad_batch(s, pad_id, m)[0],
                                       reference_pad_batch(s, pad_id, m)[1].bool())),
     Mistake("pad with `pad_id`, not always 0",
             lambda s, pad_id=0, m=1: reference_pad_batch(s, 0, m)),
     Mistake("round the longest length up to the next *multiple* of multiple_of (9 -> 12 for 4), "
             "not just to at least multiple_of", padded_to(lambda n, m: max(n, m))),
     Mistake("a length that is already a multiple stays as it is: 8 with multiple_of=4 is 8, "
             "not 12", padded_to(lambda n, m: (n // m + 1) * m))],
    hint="T = the longest length rounded up to a multiple of multiple_of; pad every sequence on "
         "the right with pad_id to T; the mask is 1 where there is a token; both are torch.long "
         "tensors of shape (B, T)",
    returns=("input_ids", "attention_mask"),
    forbidden=("bertlab.tokenization.encode", "tokenizers.Tokenizer.encode",
               "tokenizers.Tokenizer.encode_batch", "bertlab.data.pretraining.pad",
               "bertlab.data.tasks.stack"))


def batch_numbers(specials=3, multiple_of=8):
    lengths = [a + b + specials for a, b in ((5, 3), (2, 2), (9, 6))]
    T = -(-max(lengths) // multiple_of) * multiple_of
    return [len(lengths), T, sum(T - n for n in lengths)]


padded_batch_numbers = Answer(
    "padded_batch_numbers", lambda: batch_numbers(),
    hint="each pair is [CLS] A [SEP] B [SEP]: len(A) + len(B) + 3 tokens; T is the longest, "
         "rounded up to a multiple of 8; the padding is T minus each length, summed",
    wrong=[Mistake("each pair also has [CLS] and two [SEP]: 3 tokens more than A and B",
                   lambda: batch_numbers(specials=0)),
           Mistake("with multiple_of=8 the length is rounded up to a multiple of 8",
                   lambda: batch_numbers(multiple_of=1)),
           Mistake("a pair has one [CLS] and two [SEP]: 3 special tokens, not 2",
                   lambda: batch_numbers(specials=2))])
