"""Pretraining data: a token store -> sentence pairs (NSP) -> masked tokens (MLM) -> batches.

The recipe of Google's BERT (`create_pretraining_data.py`), step for step:

1. A document is a list of segments (for our corpus: its non-empty lines), each a list of ids,
   read from a `TokenStore` (bertlab.data.store: the corpus tokenized once, memory-mapped).
2. `create_instances_from_document` gathers consecutive segments into a chunk of about
   `max_seq_len - 3` tokens, splits it into A and B at a segment boundary and, half of the time,
   swaps B for a span of another document (NotNext), putting the unused segments back.
   `truncated` trims the pair to fit, from random ends of the longer side.
3. `MLMMasker` picks ~15% of the tokens to predict: 80% become [MASK], 10% a random token, 10%
   stay as they are.

Without NSP (`nsp=False`, `bertlab pretrain --no-nsp`, RoBERTa's DOC-SENTENCES), step 2 becomes
`create_spans_from_document`: the document cut into chunks of consecutive segments that fill
[CLS] A [SEP], with no B and no NSP label.

A pair is stored as five numbers (`PAIR`: where A and B start in the store's tokens, their
lengths, the NSP label; 21 bytes), never as a Python object: `create_instances` makes one pass
over the corpus per dupe factor with one random stream, as the original (a NotNext pair puts
segments back, so where the next chunk starts depends on this pair's draws), and shuffles.
`PretrainingDataset[i]` reads pair i's tokens from the store when it is asked for.

The masking rule is written once and used two ways: when the examples are built (static, as BERT:
`mask_statically`, 4 bytes per prediction) or afresh every time a batch is made (dynamic, as
RoBERTa: `PretrainingCollator` with a masker).

Two choices change the numbers; `recipe` picks them:
- "course" (the default, and what the shipped checkpoint was trained with): the target length
  (10% of the time shorter) is drawn for every pair, as Megatron-LM does, and the number to
  predict counts the non-special tokens: round(0.15 x 61) = 9 for a full 64-token pair.
- "original": as Google's script, the target length is drawn once per document (and pass), so a
  document that draws a short target is cut entirely into short pairs (more pairs, shorter on
  average, and more variance from seed to seed), and the number to predict counts every token
  of the pair, [CLS] and [SEP] included: round(0.15 x 64) = 10.

Where both recipes differ from the original, on purpose:
- The NotNext document is drawn among the *other* documents; the original gives up after ten
  tries and may then use the same document.
- Whole words never reach across [SEP] (the original glues a "##" piece that starts B to A's last
  word).
- Every special token of the tokenizer ([UNK] too) is never predicted and never a random
  replacement; the original predicts [UNK] and replaces with any vocabulary entry.
As the original, a segment longer than the sequence is kept: it becomes an A of its own (with a
NotNext B) and is trimmed to fit. So when most segments fill a sequence alone (max_seq_len 5, or
16 with long lines), most pairs are NotNext: `create_instances` then warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset, get_worker_info

from ..config import IGNORE_INDEX
from .store import TokenStore, tokenizer_hash

CONTINUATION = "##"  # WordPiece marks a piece that continues the word before it


@dataclass(frozen=True)
class SpecialTokens:
    """The ids BERT's inputs are built with, and every id the tokenizer calls special."""

    pad: int
    cls: int
    sep: int
    mask: int
    all_ids: tuple[int, ...]  # never predicted, never a random replacement

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialTokens:
        ids = {name: tokenizer.token_to_id(f"[{name.upper()}]")
               for name in ("pad", "cls", "sep", "mask")}
        missing = [f"[{name.upper()}]" for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer has no {' '.join(missing)}: BERT's pretraining data "
                             "needs [PAD] [CLS] [SEP] [MASK]; train one with "
                             "bertlab.tokenization.train_wordpiece")
        flagged = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
        return cls(**ids, all_ids=tuple(sorted(flagged | set(ids.values()))))


@dataclass
class PretrainingInstance:
    """One example: [CLS] A [SEP] B [SEP] (or [CLS] A [SEP] without NSP), its NSP label and,
    once masked statically, its labels."""

    input_ids: np.ndarray  # (T,) int32, masked if mlm_labels is set
    num_a: int  # tokens in A: [CLS] A [SEP], the first num_a + 2, are segment 0
    is_random_next: bool  # the NSP label: B comes from another document (1 = NotNext)
    mlm_labels: np.ndarray | None = None  # (T,) int32: original id where predicted, else -100


# ----------------------------------------------------------------------------------------------
# Documents -> sentence pairs

RECIPES = ("course", "original")  # see the module docstring
PAIR = np.dtype([("a_start", np.int64), ("b_start", np.int64),  # offsets into store.tokens
                 ("a_len", np.uint16), ("b_len", np.uint16), ("is_random_next", np.bool_)])


def truncated(len_a: int, len_b: int, max_num_tokens: int,
              rng: random.Random) -> tuple[int, int, int, int]:
    """Trim the longer of A and B, one token at a time from a random end, until both fit.
    -> (tokens cut off A's front, A's length, tokens cut off B's front, B's length)."""
    front, length = [0, 0], [len_a, len_b]
    while length[0] + length[1] > max_num_tokens:
        side = 0 if length[0] > length[1] else 1
        front[side] += rng.random() < 0.5
        length[side] -= 1
    return front[0], length[0], front[1], length[1]


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> None:
    """`truncated`, in place on two lists of ids."""
    front_a, len_a, front_b, len_b = truncated(len(tokens_a), len(tokens_b), max_num_tokens, rng)
    tokens_a[:] = tokens_a[front_a:front_a + len_a]
    tokens_b[:] = tokens_b[front_b:front_b + len_b]


def target_length(max_num_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    """Usually fill the sequence; sometimes aim shorter, like the short inputs of fine-tuning."""
    return rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens


def random_span(store: TokenStore, documents: np.ndarray, exclude: int, target: int,
                rng: random.Random) -> tuple[int, int]:
    """(start, length) in store.tokens of consecutive segments of a random document other than
    documents[exclude], from a random segment on, until there are `target` tokens or the
    document ends (always at least one segment)."""
    index = rng.randrange(len(documents) - 1)
    index += index >= exclude  # uniform over the other documents
    first, last = store.documents[documents[index]:documents[index] + 2]  # its segments
    segment = first + rng.randrange(last - first)
    start = store.segments[segment]
    ends = store.segments[segment + 1:last + 1]  # (n,) where each segment from there on ends
    end = ends[min(np.searchsorted(ends, start + target), len(ends) - 1)]
    return int(start), int(end - start)


def segment_starts(store: TokenStore, d: int) -> list[int]:
    """Where each segment of store document d starts in store.tokens, and where the last ends."""
    return store.segments[store.documents[d]:store.documents[d + 1] + 1].tolist()


def create_instances_from_document(store: TokenStore, documents: np.ndarray, index: int,
                                   max_seq_len: int, short_seq_prob: float, rng: random.Random,
                                   recipe: str = "course") -> list[tuple[int, int, int, int, bool]]:
    """The NSP pairs of store document documents[index], in order, as (a_start, b_start, a_len,
    b_len, is_random_next): A is store.tokens[a_start:a_start + a_len], B likewise."""
    max_num_tokens = max_seq_len - 3  # room for [CLS] A [SEP] B [SEP]
    starts = segment_starts(store, documents[index])  # (n + 1,)
    n = len(starts) - 1  # segments; segment s is tokens[starts[s]:starts[s + 1]]
    target = target_length(max_num_tokens, short_seq_prob, rng)
    pairs = []
    c = 0  # the chunk's first segment
    while c < n:
        e = bisect_left(starts, starts[c] + target, c + 1, n)  # the chunk: segments c to e - 1
        a_end = c + (rng.randint(1, e - c - 1) if e - c >= 2 else 1)  # A: segments c to a_end - 1
        a_start, a_len = starts[c], starts[a_end] - starts[c]
        is_random_next = e - c == 1 or rng.random() < 0.5
        if is_random_next:
            b_start, b_len = random_span(store, documents, index, target - a_len, rng)
            c = a_end  # put the unused segments back: they start the next chunk
        else:
            b_start, b_len = starts[a_end], starts[e] - starts[a_end]
            c = e
        front_a, a_len, front_b, b_len = truncated(a_len, b_len, max_num_tokens, rng)
        pairs.append((a_start + front_a, b_start + front_b, a_len, b_len, is_random_next))
        if recipe == "course":  # the original keeps one target for the whole document
            target = target_length(max_num_tokens, short_seq_prob, rng)
    return pairs


def create_spans_from_document(store: TokenStore, documents: np.ndarray, index: int,
                               max_seq_len: int, short_seq_prob: float, rng: random.Random,
                               recipe: str = "course") -> list[tuple[int, int, int, int, bool]]:
    """Without NSP, as RoBERTa's DOC-SENTENCES: store document documents[index] cut into chunks
    of consecutive segments of about `max_seq_len - 2` tokens, each one [CLS] A [SEP] (trimmed
    at its end to fit), as (a_start, a_start + a_len, a_len, 0, False): no B, no NSP label."""
    max_num_tokens = max_seq_len - 2  # room for [CLS] A [SEP]
    starts = segment_starts(store, documents[index])  # (n + 1,)
    n, c, spans = len(starts) - 1, 0, []
    target = target_length(max_num_tokens, short_seq_prob, rng)
    while c < n:
        e = bisect_left(starts, starts[c] + target, c + 1, n)  # the chunk: segments c to e - 1
        length = min(starts[e] - starts[c], max_num_tokens)
        spans.append((starts[c], starts[c] + length, length, 0, False))
        c = e
        if recipe == "course":
            target = target_length(max_num_tokens, short_seq_prob, rng)
    return spans


def create_instances(store: TokenStore, max_seq_len: int = 128, short_seq_prob: float = 0.1,
                     dupe_factor: int = 10, seed: int = 0, recipe: str = "course",
                     nsp: bool = True) -> np.ndarray:
    """(N,) PAIR: the NSP pairs of every document with a segment (without `nsp`, its chunks of
    one segment each: `create_spans_from_document`), `dupe_factor` passes (each splits the
    documents differently), shuffled."""
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len must be at least 5 for [CLS] A [SEP] B [SEP] with one token "
                         f"in A and B, got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if not isinstance(dupe_factor, int) or dupe_factor < 1:
        raise ValueError(f"dupe_factor must be a positive integer, got {dupe_factor!r}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    documents = np.flatnonzero(np.diff(store.documents) > 0)  # (D,) those with a segment
    if nsp and len(documents) < 2:
        raise ValueError(f"need at least two non-empty documents for NotNext pairs (B from another "
                         f"document), got {len(documents)}: split the text into documents")
    rng = random.Random(seed)
    flat = array("q")  # the pairs' five numbers, end to end
    from_document = create_instances_from_document if nsp else create_spans_from_document
    for _ in range(dupe_factor):
        for index in range(len(documents)):
            for pair in from_document(store, documents, index, max_seq_len, short_seq_prob, rng,
                                      recipe):
                flat.extend(pair)
    columns = np.frombuffer(flat, np.int64).reshape(-1, 5)  # (N, 5)
    order = list(range(len(columns)))
    rng.shuffle(order)  # as the original shuffles its list of instances
    order = np.array(order)  # (N,)
    pairs = np.empty(len(columns), PAIR)  # (N,)
    for k, name in enumerate(PAIR.names):
        pairs[name] = columns[order, k]
    if nsp:
        warn_if_mostly_not_next(store, pairs, max_seq_len)
    return pairs


def cached_instances(store: TokenStore, *args) -> np.ndarray:
    """`create_instances(store, *args)`, kept beside a store on disk (pairs-HASH.npy, HASH
    naming the arguments and the PAIR layout) and read back memory-mapped: cut once for every
    process of a distributed run (they share its pages) and for every resumed run. In memory
    without one."""
    if store.directory is None:
        return create_instances(store, *args)
    name = hashlib.sha256(json.dumps([str(PAIR), *args]).encode()).hexdigest()[:16]
    path = store.directory / f"pairs-{name}.npy"
    if not path.is_file():
        unfinished = store.directory / f".pairs-{name}-{os.getpid()}.npy"
        np.save(unfinished, create_instances(store, *args))
        unfinished.rename(path)  # whole, or not there
    return np.load(path, mmap_mode="r")


def warn_if_mostly_not_next(store: TokenStore, pairs: np.ndarray, max_seq_len: int) -> None:
    """A chunk of one segment cannot be cut, so its B comes from another document: when most
    segments fill a sequence on their own, NSP stops being a coin flip."""
    n, share = len(pairs), pairs["is_random_next"].mean()
    if share > 0.5 + max(0.1, 2.5 / np.sqrt(n)):  # 5 standard deviations, or 10 points
        filling = (np.diff(store.segments) >= max_seq_len - 3).mean()
        warnings.warn(f"{share:.0%} of the pairs are NotNext, not about half: with max_seq_len "
                      f"{max_seq_len}, {filling:.0%} of the segments fill a sequence on their own, "
                      "and a chunk of one segment always gets its B from another document. Use "
                      "a longer max_seq_len or shorter segments (lines).", stacklevel=3)


# ----------------------------------------------------------------------------------------------
# Masked LM: which tokens to predict, and what the model sees there


class MLMMasker:
    """BERT's masking rule, for a whole (B, T) batch at once.

    Each sequence with n non-special tokens gets exactly
    min(max_predictions_per_seq, max(1, round(n * masked_lm_prob))) of them picked uniformly at
    random (round half to even, as Python's round). Each picked token becomes [MASK] if a uniform
    draw is < 0.8, else stays itself if a second draw is < 0.5, else becomes a random non-special
    token. With whole-word masking, "##" pieces are picked with the word they continue: words are
    tried in random order and one that would overshoot the count is skipped, as the original does
    (so a sequence may end up with fewer). With `count_all_tokens` (the original recipe) n is the
    length of the sequence, [CLS] and [SEP] included, instead.

    It works in numpy: on batches this small, numpy's single-threaded calls are faster than
    torch's and leave the CPU threads to the model.
    """

    def __init__(self, vocab_size: int, special: SpecialTokens, masked_lm_prob: float = 0.15,
                 max_predictions_per_seq: int = 20,
                 continuation_ids: Sequence[int] | None = None, count_all_tokens: bool = False):
        if not 0.0 < masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {masked_lm_prob}")
        if not isinstance(max_predictions_per_seq, int) or max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be a positive integer, "
                             f"got {max_predictions_per_seq!r}")
        self.special = special
        self.masked_lm_prob = masked_lm_prob
        self.max_predictions_per_seq = max_predictions_per_seq
        self.count_all_tokens = count_all_tokens
        self.is_special = np.zeros(vocab_size, dtype=bool)  # (V,)
        self.is_special[list(special.all_ids)] = True
        self.replacements = np.flatnonzero(~self.is_special)  # the ids a random token is from
        if not len(self.replacements):
            raise ValueError("the vocabulary has only special tokens: nothing to replace with")
        self.is_continuation = None  # (V,) bool with whole-word masking
        if continuation_ids is not None:
            self.is_continuation = np.zeros(vocab_size, dtype=bool)
            self.is_continuation[list(continuation_ids)] = True

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, masked_lm_prob: float = 0.15,
                       max_predictions_per_seq: int = 20, whole_word_mask: bool = False,
                       count_all_tokens: bool = False):
        continuation_ids = None
        if whole_word_mask:
            vocab = tokenizer.get_vocab()
            continuation_ids = [i for token, i in vocab.items() if token.startswith(CONTINUATION)]
            if not continuation_ids:
                raise ValueError(f"whole-word masking needs WordPiece's '{CONTINUATION}' pieces; "
                                 "this tokenizer has none")
        return cls(tokenizer.get_vocab_size(), SpecialTokens.from_tokenizer(tokenizer),
                   masked_lm_prob, max_predictions_per_seq, continuation_ids, count_all_tokens)

    def num_to_predict(self, n: np.ndarray) -> np.ndarray:
        """(B,) token counts (non-special ones, or all) -> (B,) how many to predict."""
        k = np.round(n * self.masked_lm_prob)  # as Python's round: halves to even (4.5 -> 4)
        return np.minimum(np.clip(k, 1, self.max_predictions_per_seq), n).astype(np.int64)

    def __call__(self, input_ids: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) ids -> (masked ids, labels), both (B, T); labels are -100 where not picked."""
        picked = self.pick(input_ids, rng)  # (B, T)
        labels = np.where(picked, input_ids, IGNORE_INDEX)
        return self.corrupt(input_ids, picked, rng), labels

    def pick(self, input_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, T) ids -> (B, T) bool, True at the positions to predict."""
        B, T = input_ids.shape
        candidate = ~self.is_special[input_ids]  # (B, T)
        word_start = candidate
        if self.is_continuation is not None:  # a "##" piece right after a candidate joins its word
            after_candidate = np.pad(candidate[:, :-1], ((0, 0), (1, 0)))  # (B, T)
            word_start = candidate & ~(self.is_continuation[input_ids] & after_candidate)
        word = np.maximum(word_start.cumsum(1) - 1, 0)  # (B, T) word index of each candidate
        row_word = (np.arange(B)[:, None] * T + word).ravel()
        length = np.bincount(row_word, candidate.ravel(), B * T).reshape(B, T).astype(np.int64)
        keys = np.where(length > 0, rng.random((B, T)), 2.0)  # (B, W=T), non-words last
        order = keys.argsort(1)  # (B, W) words in random order
        counted = (input_ids != self.special.pad) if self.count_all_tokens else candidate
        k = np.minimum(self.num_to_predict(counted.sum(1)), candidate.sum(1))  # (B,)
        taken_in_order = self.take_greedily(np.take_along_axis(length, order, 1), k)
        taken = np.empty_like(taken_in_order)  # (B, W) by word index
        np.put_along_axis(taken, order, taken_in_order, 1)
        return candidate & np.take_along_axis(taken, word, 1)

    @staticmethod
    def take_greedily(length: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Walk the words in order (length (B, W)), taking each that still fits in k (B,) tokens."""
        taken = np.zeros(length.shape, dtype=bool)  # (B, W)
        total = np.zeros_like(k)  # (B,)
        for w in range(length.shape[1]):
            if (total >= k).all():
                break
            fits = (length[:, w] > 0) & (total + length[:, w] <= k)  # (B,)
            taken[:, w] = fits
            total += fits * length[:, w]
        return taken

    def corrupt(self, input_ids: np.ndarray, picked: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """What the model sees at the picked positions: 80% [MASK], 10% itself, 10% random."""
        u = rng.random((2, *input_ids.shape))  # (2, B, T)
        to_mask = picked & (u[0] < 0.8)
        to_random = picked & (u[0] >= 0.8) & (u[1] >= 0.5)
        random_ids = self.replacements[rng.integers(len(self.replacements),
                                                    size=input_ids.shape)]  # (B, T)
        return np.where(to_random, random_ids, np.where(to_mask, self.special.mask, input_ids))


def pad(sequences: Sequence[np.ndarray], value: int, width: int | None = None) -> np.ndarray:
    """Right-pad 1-D sequences to the longest, or to `width` if that is longer -> (B, T) int64."""
    padded = np.full((len(sequences), max(width or 0, *map(len, sequences))), value,
                     dtype=np.int64)
    for row, sequence in zip(padded, sequences):
        row[:len(sequence)] = sequence
    return padded


@dataclass
class StaticMasks:
    """Masks drawn once (static masking, as BERT), 4 bytes per prediction: instance i shows
    shown[o:p] at positions[o:p], where o, p = offsets[i], offsets[i + 1]."""

    offsets: np.ndarray  # (N + 1,) int64
    positions: np.ndarray  # (M,) uint16
    shown: np.ndarray  # (M,) uint16, or uint32 for a vocabulary over 65,536

    def apply(self, i: int, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instance i's unmasked (T,) ids -> (masked ids, labels), both (T,) int32."""
        span = slice(self.offsets[i], self.offsets[i + 1])
        positions = self.positions[span]
        labels = np.full(len(input_ids), IGNORE_INDEX, dtype=np.int32)
        labels[positions] = input_ids[positions]
        masked = input_ids.copy()
        masked[positions] = self.shown[span]
        return masked, labels


def mask_statically(instances: Sequence[PretrainingInstance], masker: MLMMasker, seed: int = 0,
                    batch_size: int = 1024) -> StaticMasks:
    """Static masking, as BERT: every instance gets its masks once, here, in batches."""
    rng = np.random.default_rng(seed)
    shown_dtype = np.uint16 if len(masker.is_special) <= 2**16 else np.uint32
    counts, positions, shown = [np.zeros(1, np.int64)], [np.zeros(0, np.uint16)], [
        np.zeros(0, shown_dtype)]
    for start in range(0, len(instances), batch_size):
        ids, labels = masker(pad([x.input_ids for x in instances[start:start + batch_size]],
                                 masker.special.pad), rng)  # (B, T) each
        picked = labels != IGNORE_INDEX
        counts.append(picked.sum(1))
        positions.append(np.nonzero(picked)[1].astype(np.uint16))
        shown.append(ids[picked].astype(shown_dtype))
    return StaticMasks(np.cumsum(np.concatenate(counts)), np.concatenate(positions),
                       np.concatenate(shown))


# ----------------------------------------------------------------------------------------------
# Batches


class PretrainingCollator:
    """Instances -> a padded batch of long tensors, the keyword arguments of `BertForPreTraining`.

    With a masker it masks afresh at every call (dynamic masking, as RoBERTa) and the instances
    must be unmasked; without one they must carry their static masks (`mask_statically`). With
    `max_predictions` P the batch also holds `mlm_positions` (B, P), BERT's masked_lm_positions:
    each row's labelled positions in order, then unlabelled ones (their label -100 is ignored), so
    that the model decodes a (B, P) block whatever the number masked.
    """

    def __init__(self, pad_id: int, masker: MLMMasker | None = None, seed: int = 0,
                 max_predictions: int | None = None):
        if max_predictions is not None and (not isinstance(max_predictions, int)
                                            or max_predictions < 1):
            raise ValueError(f"max_predictions must be a positive integer, got {max_predictions!r}")
        self.pad_id = pad_id
        self.masker = masker
        self.seed = seed
        self.max_predictions = max_predictions
        self.width = None  # pad every batch to this many tokens at least (one shape to compile)
        self.generator = np.random.default_rng(seed)
        self.worker_seed = None

    def __call__(self, instances: Sequence[PretrainingInstance]) -> dict[str, torch.Tensor]:
        static = [x.mlm_labels is not None for x in instances]
        if self.masker is not None and any(static):
            raise ValueError("these instances are already masked: a dynamic-masking collator "
                             "needs unmasked instances (pretraining_examples with "
                             "dynamic_masking=True)")
        if self.masker is None and not all(static):
            raise ValueError("these instances are not masked: mask them with mask_statically, or "
                             "give the collator a masker for dynamic masking")
        input_ids = pad([x.input_ids for x in instances], self.pad_id, self.width)  # (B, T)
        lengths = np.array([len(x.input_ids) for x in instances])  # (B,)
        num_a = np.array([x.num_a for x in instances])  # (B,)
        position = np.arange(input_ids.shape[1])  # (T,)
        attention_mask = position < lengths[:, None]  # (B, T)
        token_type_ids = (position >= num_a[:, None] + 2) & attention_mask  # (B, T) B and its [SEP]
        if self.masker is None:
            mlm_labels = pad([x.mlm_labels for x in instances], IGNORE_INDEX, self.width)
        else:
            input_ids, mlm_labels = self.masker(input_ids, self.rng())
        batch = dict(input_ids=input_ids, token_type_ids=token_type_ids,
                     attention_mask=attention_mask, mlm_labels=mlm_labels)
        if (lengths > num_a + 2).any():  # pairs: NSP labels (chunks without a B have none)
            batch["nsp_labels"] = np.array([x.is_random_next for x in instances])
        if self.max_predictions is not None:
            batch["mlm_positions"] = self.positions(mlm_labels)
        return {name: torch.from_numpy(array).long() for name, array in batch.items()}

    def positions(self, mlm_labels: np.ndarray) -> np.ndarray:
        """(B, T) labels -> (B, P) positions: the labelled ones first, in order; P columns even
        when T is shorter (the rest point at position 0, [CLS], which is never labelled)."""
        labelled = mlm_labels != IGNORE_INDEX  # (B, T)
        most, P = int(labelled.sum(1).max(initial=0)), self.max_predictions
        if most > P:
            raise ValueError(f"a row has {most} masked positions, more than max_predictions={P}: "
                             "raise it (at least the masker's max_predictions_per_seq)")
        order = np.argsort(~labelled, axis=1, kind="stable")[:, :P]  # (B, min(T, P))
        positions = np.zeros((len(mlm_labels), P), dtype=np.int64)  # (B, P)
        positions[:, :order.shape[1]] = order
        return positions

    def reseed(self, key: Sequence[int]) -> None:
        """Draw the next batch's masks from a stream of its own, named by `key`:
        bertlab.training names each micro-batch so (update, process, micro-batch), which makes
        its masks a function of the seed and that key alone, whichever DataLoader worker makes
        it and however often the run was stopped and resumed."""
        worker = get_worker_info()
        self.worker_seed = worker.seed if worker is not None else None
        self.generator = np.random.default_rng([self.seed, *key])

    def rng(self) -> np.random.Generator:
        """The random stream the masks are drawn from. Unless `reseed` named it, a DataLoader
        worker starts its own from its worker seed (new for every worker and epoch), so no two
        workers or epochs repeat each other's masks."""
        worker = get_worker_info()
        if worker is not None and worker.seed != self.worker_seed:
            self.worker_seed = worker.seed
            self.generator = np.random.default_rng([self.seed, worker.seed])
        return self.generator


class PretrainingDataset(Dataset):
    """The pairs of a token store, made into instances when indexed (with their static masks,
    if any), and the collator that turns a list of them into a batch. Nothing else is held per
    example: `pairs` is (N,) PAIR, 21 bytes each."""

    def __init__(self, store: TokenStore, pairs: np.ndarray, special: SpecialTokens,
                 collate: PretrainingCollator, masks: StaticMasks | None = None):
        self.store, self.pairs, self.special = store, pairs, special
        self.collate, self.masks = collate, masks

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int | slice) -> PretrainingInstance | list[PretrainingInstance]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # from the end if negative; IndexError past it
        a_start, b_start, a_len, b_len, is_random_next = self.pairs[i].item()
        tokens = self.store.tokens
        ends = [a_len + 1, a_len + b_len + 2] if b_len else [a_len + 1]  # where each [SEP] is
        input_ids = np.empty(ends[-1] + 1, np.int32)  # (T,) [CLS] A [SEP] B [SEP], or [CLS] A [SEP]
        input_ids[[0, *ends]] = self.special.cls, *[self.special.sep] * len(ends)
        input_ids[1:a_len + 1] = tokens[a_start:a_start + a_len]
        input_ids[a_len + 2:a_len + 2 + b_len] = tokens[b_start:b_start + b_len]
        mlm_labels = None
        if self.masks is not None:
            input_ids, mlm_labels = self.masks.apply(i, input_ids)
        return PretrainingInstance(input_ids, a_len, is_random_next, mlm_labels)

    @property
    def instances(self) -> PretrainingDataset:
        """The instances as a sequence: the data set itself (`ds.instances[:8]` is a list)."""
        return self


# ----------------------------------------------------------------------------------------------
# Text -> examples, in one call


def pretraining_examples(documents: Sequence[str] | TokenStore, tokenizer: Tokenizer,
                         max_seq_len: int = 128, seed: int = 0, *, dupe_factor: int = 10,
                         short_seq_prob: float = 0.1, masked_lm_prob: float = 0.15,
                         max_predictions_per_seq: int | None = None,
                         whole_word_mask: bool = False, dynamic_masking: bool = False,
                         recipe: str = "course", fixed_positions: bool = False,
                         nsp: bool = True) -> PretrainingDataset:
    """Texts (one per document; segments are its non-empty lines), or the `TokenStore` they were
    tokenized into by this tokenizer -> BERT pretraining examples, by `recipe` ("course" or
    "original", see the module docstring). At most `max_predictions_per_seq` tokens of a pair
    are masked (None: round(masked_lm_prob · max_seq_len), a cap that never binds); with
    `fixed_positions` the batches hold that many `mlm_positions` per row (fixed shapes).
    Without `nsp` the examples are single chunks of a document with no NSP label (RoBERTa).

    Use as `DataLoader(ds, batch_size=32, shuffle=True, collate_fn=ds.collate)`.
    """
    if max_predictions_per_seq is None:
        max_predictions_per_seq = max(1, round(masked_lm_prob * max_seq_len))
    masker = MLMMasker.from_tokenizer(tokenizer, masked_lm_prob, max_predictions_per_seq,
                                      whole_word_mask, count_all_tokens=recipe == "original")
    store = documents
    if not isinstance(store, TokenStore):
        store = TokenStore.build(documents, tokenizer)
    elif store.meta["tokenizer"] not in (None, tokenizer_hash(tokenizer)):
        raise ValueError("this token store was made with another tokenizer: build the store "
                         "with the tokenizer the examples are for")
    pairs = cached_instances(store, max_seq_len, short_seq_prob, dupe_factor, seed, recipe, nsp)
    pad_id, positions = masker.special.pad, max_predictions_per_seq if fixed_positions else None
    if dynamic_masking:
        return PretrainingDataset(store, pairs, masker.special,
                                  PretrainingCollator(pad_id, masker, seed, positions))
    unmasked = PretrainingDataset(store, pairs, masker.special, PretrainingCollator(pad_id))
    return PretrainingDataset(store, pairs, masker.special,
                              PretrainingCollator(pad_id, max_predictions=positions),
                              mask_statically(unmasked, masker, seed))
