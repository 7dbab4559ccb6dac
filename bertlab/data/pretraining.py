"""Pretraining data: documents -> sentence pairs (NSP) -> masked tokens (MLM) -> batches.

The recipe of Google's BERT (`create_pretraining_data.py`), step for step:

1. A document is a list of segments (for our corpus: its non-empty lines), each a list of ids.
2. `create_instances_from_document` gathers consecutive segments into a chunk of about
   `max_seq_len - 3` tokens, splits it into A and B at a segment boundary and, half of the time,
   swaps B for a span of another document (NotNext). `truncate_seq_pair` trims the pair to fit.
3. `MLMMasker` picks ~15% of the tokens to predict: 80% become [MASK], 10% a random token, 10%
   stay as they are.

The masking rule is written once and used two ways: when the examples are built (static, as BERT:
`mask_instances`) or afresh every time a batch is made (dynamic, as RoBERTa: `PretrainingCollator`
with a masker).

Where this differs from the original, on purpose:
- The target length (10% of the time shorter) is drawn for every instance, as Megatron-LM does;
  the original draws it once per document, and our documents are whole plays (hundreds of pairs).
- The NotNext document is drawn among the *other* documents; the original gives up after ten
  tries and may then use the same document.
- Whole words never reach across [SEP] (the original glues a "##" piece that starts B to A's last
  word), and the number to predict counts the non-special tokens (the original also counts the
  [CLS] and two [SEP]).
- Every special token of the tokenizer ([UNK] too) is never predicted and never a random
  replacement; the original predicts [UNK] and replaces with any vocabulary entry.
- A segment longer than the sequence is kept, not dropped: it becomes an A on its own (with a
  NotNext B) and `truncate_seq_pair` trims it, from random ends, to what fits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset, get_worker_info

from ..model import IGNORE_INDEX

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
    """One example: [CLS] A [SEP] B [SEP], its NSP label and, once masked statically, its labels."""

    input_ids: np.ndarray  # (T,) int32, masked if mlm_labels is set
    num_a: int  # tokens in A: [CLS] A [SEP], the first num_a + 2, are segment 0
    is_random_next: bool  # the NSP label: B comes from another document (1 = NotNext)
    mlm_labels: np.ndarray | None = None  # (T,) int32: original id where predicted, else -100


# ----------------------------------------------------------------------------------------------
# Documents -> sentence pairs


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> None:
    """Trim the longer of A and B, one token at a time from a random end, until both fit."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        del longer[0 if rng.random() < 0.5 else -1]


def target_length(max_num_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    """Usually fill the sequence; sometimes aim shorter, like the short inputs of fine-tuning."""
    return rng.randint(2, max_num_tokens) if rng.random() < short_seq_prob else max_num_tokens


def random_span(documents: list[list[list[int]]], exclude: int, target: int,
                rng: random.Random) -> list[int]:
    """Consecutive segments of a random document other than `exclude`, from a random segment on,
    until there are `target` tokens or the document ends (always at least one segment)."""
    index = rng.randrange(len(documents) - 1)
    index += index >= exclude  # uniform over the other documents
    document = documents[index]
    tokens = []
    for j in range(rng.randrange(len(document)), len(document)):
        tokens.extend(document[j])
        if len(tokens) >= target:
            break
    return tokens


def create_instances_from_document(documents: list[list[list[int]]], index: int,
                                   max_seq_len: int, short_seq_prob: float,
                                   rng: random.Random) -> list[tuple[list[int], list[int], bool]]:
    """The NSP pairs (tokens_a, tokens_b, is_random_next) of documents[index], in order."""
    document = documents[index]
    max_num_tokens = max_seq_len - 3  # room for [CLS] A [SEP] B [SEP]
    target = target_length(max_num_tokens, short_seq_prob, rng)
    pairs = []
    chunk, chunk_len = [], 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_len += len(document[i])
        if i == len(document) - 1 or chunk_len >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1  # segments in A
            tokens_a = [t for segment in chunk[:a_end] for t in segment]
            is_random_next = len(chunk) == 1 or rng.random() < 0.5
            if is_random_next:
                tokens_b = random_span(documents, index, target - len(tokens_a), rng)
                i -= len(chunk) - a_end  # put the unused segments back: they start the next chunk
            else:
                tokens_b = [t for segment in chunk[a_end:] for t in segment]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append((tokens_a, tokens_b, is_random_next))
            chunk, chunk_len = [], 0
            target = target_length(max_num_tokens, short_seq_prob, rng)
        i += 1
    return pairs


def create_instances(documents: Sequence[Sequence[Sequence[int]]], special: SpecialTokens,
                     max_seq_len: int = 128, short_seq_prob: float = 0.1, dupe_factor: int = 10,
                     seed: int = 0) -> list[PretrainingInstance]:
    """Unmasked NSP instances from tokenized documents: `dupe_factor` passes (each splits the
    documents differently), shuffled. Empty segments and documents carry no tokens and are skipped.
    """
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len must be at least 5 for [CLS] A [SEP] B [SEP] with one token "
                         f"in A and B, got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if not isinstance(dupe_factor, int) or dupe_factor < 1:
        raise ValueError(f"dupe_factor must be a positive integer, got {dupe_factor!r}")
    documents = [[segment for segment in doc if len(segment)] for doc in documents]
    documents = [doc for doc in documents if doc]
    if len(documents) < 2:
        raise ValueError(f"need at least two non-empty documents for NotNext pairs (B from another "
                         f"document), got {len(documents)}: split the text into documents")
    rng = random.Random(seed)
    pairs = [pair for _ in range(dupe_factor) for index in range(len(documents))
             for pair in create_instances_from_document(documents, index, max_seq_len,
                                                        short_seq_prob, rng)]
    rng.shuffle(pairs)
    return [PretrainingInstance(np.array([special.cls, *a, special.sep, *b, special.sep],
                                         dtype=np.int32), len(a), is_random_next)
            for a, b, is_random_next in pairs]


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
    (so a sequence may end up with fewer).

    It works in numpy: on batches this small, numpy's single-threaded calls are faster than
    torch's and leave the CPU threads to the model.
    """

    def __init__(self, vocab_size: int, special: SpecialTokens, masked_lm_prob: float = 0.15,
                 max_predictions_per_seq: int = 20,
                 continuation_ids: Sequence[int] | None = None):
        if not 0.0 < masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {masked_lm_prob}")
        if not isinstance(max_predictions_per_seq, int) or max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be a positive integer, "
                             f"got {max_predictions_per_seq!r}")
        self.special = special
        self.masked_lm_prob = masked_lm_prob
        self.max_predictions_per_seq = max_predictions_per_seq
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
                       max_predictions_per_seq: int = 20, whole_word_mask: bool = False):
        continuation_ids = None
        if whole_word_mask:
            vocab = tokenizer.get_vocab()
            continuation_ids = [i for token, i in vocab.items() if token.startswith(CONTINUATION)]
            if not continuation_ids:
                raise ValueError(f"whole-word masking needs WordPiece's '{CONTINUATION}' pieces; "
                                 "this tokenizer has none")
        return cls(tokenizer.get_vocab_size(), SpecialTokens.from_tokenizer(tokenizer),
                   masked_lm_prob, max_predictions_per_seq, continuation_ids)

    def num_to_predict(self, n: np.ndarray) -> np.ndarray:
        """(B,) non-special token counts -> (B,) how many to predict."""
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
        taken_in_order = self.take_greedily(np.take_along_axis(length, order, 1),
                                            self.num_to_predict(candidate.sum(1)))
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


def pad(sequences: Sequence[np.ndarray], value: int) -> np.ndarray:
    """Right-pad 1-D sequences to the longest -> (B, T) int64."""
    padded = np.full((len(sequences), max(map(len, sequences))), value, dtype=np.int64)
    for row, sequence in zip(padded, sequences):
        row[:len(sequence)] = sequence
    return padded


def mask_instances(instances: Sequence[PretrainingInstance], masker: MLMMasker, seed: int = 0,
                   batch_size: int = 1024) -> list[PretrainingInstance]:
    """Static masking, as BERT: every instance gets its masks once, here."""
    rng = np.random.default_rng(seed)
    masked_instances = []
    for start in range(0, len(instances), batch_size):
        chunk = instances[start:start + batch_size]
        ids, labels = masker(pad([x.input_ids for x in chunk], masker.special.pad), rng)
        for x, row_ids, row_labels in zip(chunk, ids.astype(np.int32), labels.astype(np.int32)):
            n = len(x.input_ids)
            masked_instances.append(replace(x, input_ids=row_ids[:n], mlm_labels=row_labels[:n]))
    return masked_instances


# ----------------------------------------------------------------------------------------------
# Batches


class PretrainingCollator:
    """Instances -> a padded batch of long tensors, the keyword arguments of `BertForPreTraining`.

    With a masker it masks afresh at every call (dynamic masking, as RoBERTa) and the instances
    must be unmasked; without one they must carry their static masks (`mask_instances`).
    """

    def __init__(self, pad_id: int, masker: MLMMasker | None = None, seed: int = 0):
        self.pad_id = pad_id
        self.masker = masker
        self.seed = seed
        self.generator = np.random.default_rng(seed)
        self.worker_seed = None

    def __call__(self, instances: Sequence[PretrainingInstance]) -> dict[str, torch.Tensor]:
        static = [x.mlm_labels is not None for x in instances]
        if self.masker is not None and any(static):
            raise ValueError("these instances are already masked: a dynamic-masking collator "
                             "needs the unmasked instances of create_instances")
        if self.masker is None and not all(static):
            raise ValueError("these instances are not masked: mask them with mask_instances, or "
                             "give the collator a masker for dynamic masking")
        input_ids = pad([x.input_ids for x in instances], self.pad_id)  # (B, T)
        lengths = np.array([len(x.input_ids) for x in instances])  # (B,)
        num_a = np.array([x.num_a for x in instances])  # (B,)
        position = np.arange(input_ids.shape[1])  # (T,)
        attention_mask = position < lengths[:, None]  # (B, T)
        token_type_ids = (position >= num_a[:, None] + 2) & attention_mask  # (B, T) B and its [SEP]
        if self.masker is None:
            mlm_labels = pad([x.mlm_labels for x in instances], IGNORE_INDEX)  # (B, T)
        else:
            input_ids, mlm_labels = self.masker(input_ids, self.rng())
        batch = dict(input_ids=input_ids, token_type_ids=token_type_ids,
                     attention_mask=attention_mask, mlm_labels=mlm_labels,
                     nsp_labels=np.array([x.is_random_next for x in instances]))
        return {name: torch.from_numpy(array).long() for name, array in batch.items()}

    def rng(self) -> np.random.Generator:
        """This process's random stream. A DataLoader worker reseeds from its worker seed (new for
        every worker and epoch), so no two workers or epochs repeat each other's masks."""
        worker = get_worker_info()
        if worker is not None and worker.seed != self.worker_seed:
            self.worker_seed = worker.seed
            self.generator = np.random.default_rng([self.seed, worker.seed])
        return self.generator

    def state_dict(self) -> dict:
        """Where the masks' random stream is: bertlab.training checkpoints it with the run, so a
        resumed run masks exactly as an uninterrupted one would have."""
        return {"generator": self.generator.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.generator.bit_generator.state = state["generator"]


class PretrainingDataset(Dataset):
    """The instances, and the collator that turns a list of them into a batch."""

    def __init__(self, instances: Sequence[PretrainingInstance], collate: PretrainingCollator):
        self.instances = instances
        self.collate = collate

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int) -> PretrainingInstance:
        return self.instances[i]


# ----------------------------------------------------------------------------------------------
# Text -> examples, in one call


def tokenize_documents(texts: Sequence[str], tokenizer: Tokenizer) -> list[list[list[int]]]:
    """Each text's non-empty lines as token ids, without special tokens: the segments."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("documents must be a list of strings, one per document "
                         "(e.g. [d.text for d in load_corpus()])")
    lines = [[s for s in (line.strip() for line in text.splitlines()) if s] for text in texts]
    plain = Tokenizer.from_str(tokenizer.to_str())  # a copy that neither pads nor truncates
    plain.no_padding()
    plain.no_truncation()
    encodings = iter(plain.encode_batch([s for doc in lines for s in doc],
                                        add_special_tokens=False))
    return [[next(encodings).ids for _ in doc] for doc in lines]


def pretraining_examples(documents: Sequence[str], tokenizer: Tokenizer, max_seq_len: int = 128,
                         seed: int = 0, *, dupe_factor: int = 10, short_seq_prob: float = 0.1,
                         masked_lm_prob: float = 0.15, max_predictions_per_seq: int = 20,
                         whole_word_mask: bool = False,
                         dynamic_masking: bool = False) -> PretrainingDataset:
    """Texts (one per document; segments are its non-empty lines) -> BERT pretraining examples.

    Use as `DataLoader(ds, batch_size=32, shuffle=True, collate_fn=ds.collate)`.
    """
    masker = MLMMasker.from_tokenizer(tokenizer, masked_lm_prob, max_predictions_per_seq,
                                      whole_word_mask)
    instances = create_instances(tokenize_documents(documents, tokenizer), masker.special,
                                 max_seq_len, short_seq_prob, dupe_factor, seed)
    pad_id = masker.special.pad
    if dynamic_masking:
        return PretrainingDataset(instances, PretrainingCollator(pad_id, masker, seed))
    return PretrainingDataset(mask_instances(instances, masker, seed), PretrainingCollator(pad_id))
