"""Pretraining data: NSP pairs, MLM masking and batches, checked against BERT's recipe.

Statistical checks use bounds of 5 standard deviations of the binomial count (a correct
implementation fails one with probability below 1e-6); every generator is seeded, so the
outcome is fixed anyway. The pairs are built from a token store and read lazily; `reference_*`
below is the in-memory builder they replaced (lists of lists, one object per example), kept here
as the oracle they must equal draw for draw.
"""

import math
import random
import warnings
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import tokenizers
import torch
from torch.utils.data import DataLoader

import bertlab
from bertlab.data.pretraining import (
    IGNORE_INDEX,
    PAIR,
    MLMMasker,
    PretrainingCollator,
    PretrainingDataset,
    PretrainingInstance,
    SpecialTokens,
    create_instances,
    mask_statically,
    pad,
    pretraining_examples,
    target_length,
    truncate_seq_pair,
)
from bertlab.data.store import TokenStore
from bertlab.tokenization import train_wordpiece

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = SpecialTokens(pad=PAD, cls=CLS, sep=SEP, mask=MASK, all_ids=(PAD, UNK, CLS, SEP, MASK))

# Synthetic documents whose ids say where each token came from:
# id = OFFSET + document * STRIDE + position of the token in its document.
OFFSET, STRIDE = 5, 100_000


def documents_from_lengths(segment_lengths):
    """One document per list of segment lengths; ids count up through each document."""
    documents = []
    for d, lengths in enumerate(segment_lengths):
        start, document = OFFSET + d * STRIDE, []
        for length in lengths:
            document.append(list(range(start, start + length)))
            start += length
        documents.append(document)
    return documents


def instances_of(documents, max_seq_len=128, short_seq_prob=0.1, dupe_factor=10, seed=0,
                 recipe="course"):
    """The unmasked instances the lazy pipeline makes of tokenized documents, as a list."""
    store = TokenStore.from_token_ids(documents)
    pairs = create_instances(store, max_seq_len, short_seq_prob, dupe_factor, seed, recipe)
    return PretrainingDataset(store, pairs, SPECIAL, PretrainingCollator(PAD))[:]


def masked(instances, masker, seed=0):
    """The instances with static masks (mask_statically), as PretrainingDataset applies them."""
    masks = mask_statically(instances, masker, seed)
    return [replace(x, **dict(zip(("input_ids", "mlm_labels"), masks.apply(i, x.input_ids))))
            for i, x in enumerate(instances)]


def random_documents(seed, num_docs, num_segments, max_segment_len):
    rng = random.Random(seed)
    return documents_from_lengths(
        [[rng.randint(1, max_segment_len) for _ in range(num_segments)] for _ in range(num_docs)])


def locate(tokens):
    """(document, first position, last position) of a run of tokens, which must be contiguous."""
    documents = {(t - OFFSET) // STRIDE for t in tokens}
    assert len(documents) == 1, "a segment mixes documents"
    positions = [(t - OFFSET) % STRIDE for t in tokens]
    assert positions == list(range(positions[0], positions[0] + len(positions))), "not contiguous"
    return documents.pop(), positions[0], positions[-1]


def split(instance):
    """The A and B token lists of an instance, after checking its [CLS] A [SEP] B [SEP] frame."""
    ids = instance.input_ids.tolist()
    n = instance.num_a
    assert ids[0] == CLS and ids[n + 1] == SEP and ids[-1] == SEP
    a, b = ids[1:n + 1], ids[n + 2:-1]
    assert a and b and SEP not in a + b and CLS not in a + b
    return a, b


def test_truncate_seq_pair_trims_the_longer_side_from_both_ends():
    rng = random.Random(0)
    fronts = backs = 0
    for _ in range(200):
        a, b = list(range(40)), list(range(100, 110))
        truncate_seq_pair(a, b, 30, rng)
        assert b == list(range(100, 110)) and len(a) == 20  # only the longer side shrinks
        assert a == list(range(a[0], a[0] + 20))  # what is left is a contiguous run
        fronts += a[0] > 0
        backs += a[-1] < 39
    assert fronts > 150 and backs > 150  # 20 random-end pops: both ends are almost always hit
    a, b = list(range(7)), list(range(9))
    truncate_seq_pair(a, b, 2, rng)
    assert len(a) == len(b) == 1


def test_pairs_come_from_where_they_claim():
    max_seq_len = 64
    max_num_tokens = max_seq_len - 3
    documents = random_documents(0, num_docs=40, num_segments=100, max_segment_len=20)
    starts = [{s[0] - OFFSET - d * STRIDE for s in doc} for d, doc in enumerate(documents)]
    ends = [{s[-1] - OFFSET - d * STRIDE for s in doc} for d, doc in enumerate(documents)]
    instances = instances_of(documents, max_seq_len, dupe_factor=4, seed=1)
    assert len(instances) > 3000
    trimmed_front = trimmed_back = 0
    for x in instances:
        assert len(x.input_ids) <= max_seq_len
        a, b = split(x)
        doc_a, a0, a1 = locate(a)
        doc_b, b0, b1 = locate(b)
        full = len(a) + len(b) == max_num_tokens  # truncation always stops at exactly this
        if not full:  # untruncated: whole segments only
            assert a0 in starts[doc_a] and a1 in ends[doc_a]
            assert b0 in starts[doc_b] and b1 in ends[doc_b]
        if x.is_random_next:
            assert doc_b != doc_a
        else:  # the true continuation: same document, right after A but for trimmed tokens
            assert doc_b == doc_a and b0 > a1
            assert b0 == a1 + 1 or full
            assert min(e for e in ends[doc_a] if e >= a1) < b0  # a segment boundary between
        trimmed_front += a0 not in starts[doc_a]
        trimmed_back += a1 not in ends[doc_a]
    assert trimmed_front > 50 and trimmed_back > 50


def test_every_segment_is_used_once_per_pass():
    # One-token segments: chunks end exactly at the target length, so nothing is ever truncated,
    # and each pass must place every segment exactly once, in an A or in an IsNext B (the
    # segments a NotNext pair leaves unused are put back).
    documents = documents_from_lengths([[1] * 300 for _ in range(6)])
    instances = instances_of(documents, max_seq_len=20, short_seq_prob=0.3,
                                 dupe_factor=1, seed=2)
    used = Counter()
    for x in instances:
        a, b = split(x)
        used.update(a)
        if not x.is_random_next:
            used.update(b)
    assert used == Counter(t for doc in documents for segment in doc for t in segment)


@pytest.fixture(scope="module")
def one_token_instances():
    documents = documents_from_lengths([[1] * 5000 for _ in range(4)])
    return instances_of(documents, max_seq_len=33, short_seq_prob=0.1,
                            dupe_factor=10, seed=3)


def test_nsp_labels_are_half_notnext(one_token_instances):
    # Chunks of two or more segments get NotNext with probability 1/2. Only a chunk of a single
    # segment is NotNext for sure: with one-token segments and targets >= 2, that is at most the
    # last chunk of each document in each pass, 4 * 10 of them.
    n = len(one_token_instances)
    not_next = sum(x.is_random_next for x in one_token_instances)
    forced = 4 * 10
    sigma = math.sqrt(n * 0.25)  # binomial(n, 1/2)
    assert n > 8000
    assert n / 2 - 5 * sigma <= not_next <= n / 2 + 5 * sigma + forced


def test_one_in_ten_instances_aims_shorter(one_token_instances):
    # With one-token segments an instance is exactly its target length, except near a
    # document's end. The target is redrawn per instance: 10% of the time uniform in [2, 30],
    # which is shorter than the full 30 with probability 28/29.
    n = len(one_token_instances)
    short = sum(len(x.input_ids) < 33 for x in one_token_instances)
    p = 0.1 * 28 / 29
    sigma = math.sqrt(n * p * (1 - p))
    near_end = 0.01 * n  # documents' last chunks, and NotNext spans that hit a document's end
    assert n * p - 5 * sigma <= short <= n * p + 5 * sigma + near_end


def test_corner_cases_are_kept_not_dropped():
    # A 300-token segment (longer than any sequence), a one-segment document, a two-segment
    # one, empty segments and documents (skipped), and a regular document.
    documents = documents_from_lengths([[300], [1], [2, 1], [5] * 30])
    documents[3].insert(4, [])
    documents += [[], [[]]]
    instances = instances_of(documents, max_seq_len=32, short_seq_prob=0.0,
                                 dupe_factor=1, seed=4)
    by_a_document = {}
    for x in instances:
        assert len(x.input_ids) <= 32
        a, b = split(x)
        by_a_document.setdefault(locate(a)[0], []).append((x, a, b))
    [(long_one, a, b)] = by_a_document[0]  # the long segment: an A of its own, trimmed to fit
    assert long_one.is_random_next and len(a) + len(b) == 29 and len(a) >= 14
    [(single, a, b)] = by_a_document[1]
    assert single.is_random_next and a == documents[1][0]
    used = Counter(t for x, a, b in by_a_document[2] for t in a + ([] if x.is_random_next else b))
    assert used == Counter(documents[2][0] + documents[2][1])


# ----------------------------------------------------------------------------------------------
# The in-memory builder the lazy one replaced: its pairs, draw for draw


def reference_random_span(documents, exclude, target, rng):
    index = rng.randrange(len(documents) - 1)
    document = documents[index + (index >= exclude)]
    tokens = []
    for j in range(rng.randrange(len(document)), len(document)):
        tokens.extend(document[j])
        if len(tokens) >= target:
            break
    return tokens


def reference_document_pairs(documents, index, max_seq_len, short_seq_prob, rng):
    document, max_num_tokens = documents[index], max_seq_len - 3
    target = target_length(max_num_tokens, short_seq_prob, rng)
    pairs, chunk, i = [], [], 0
    while i < len(document):
        chunk.append(document[i])
        if i == len(document) - 1 or sum(map(len, chunk)) >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for segment in chunk[:a_end] for t in segment]
            is_random_next = len(chunk) == 1 or rng.random() < 0.5
            if is_random_next:
                tokens_b = reference_random_span(documents, index, target - len(tokens_a), rng)
                i -= len(chunk) - a_end
            else:
                tokens_b = [t for segment in chunk[a_end:] for t in segment]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append((tokens_a, tokens_b, is_random_next))
            chunk = []
            target = target_length(max_num_tokens, short_seq_prob, rng)
        i += 1
    return pairs


def reference_instances(documents, max_seq_len, short_seq_prob, dupe_factor, seed):
    documents = [d for d in ([s for s in doc if len(s)] for doc in documents) if d]
    rng = random.Random(seed)
    pairs = [pair for _ in range(dupe_factor) for index in range(len(documents))
             for pair in reference_document_pairs(documents, index, max_seq_len, short_seq_prob,
                                                  rng)]
    rng.shuffle(pairs)
    return [(a, b, is_random_next) for a, b, is_random_next in pairs]


@pytest.mark.parametrize("max_seq_len, short_seq_prob, dupe_factor, seed", [
    (64, 0.1, 3, 0), (20, 0.3, 2, 1), (128, 0.0, 1, 2), (7, 0.5, 2, 3)])
def test_the_lazy_pairs_equal_the_in_memory_builders(max_seq_len, short_seq_prob, dupe_factor,
                                                      seed):
    documents = random_documents(seed, num_docs=12, num_segments=60, max_segment_len=25)
    documents[3][5:9] = [[], [], []]  # empty segments and an empty document are skipped
    documents.insert(4, [])
    expected = reference_instances(documents, max_seq_len, short_seq_prob, dupe_factor, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 7 tokens: mostly NotNext, which is not the point here
        got = instances_of(documents, max_seq_len, short_seq_prob, dupe_factor, seed)
    assert [(*split(x), x.is_random_next) for x in got] == expected


def test_static_masks_equal_masking_the_whole_list_at_once():
    # mask_statically draws batch by batch, as the in-memory builder masked its list: the same
    # padded (B, T) batches, so the same stream of random numbers.
    instances = random_instances(6, rows=2500)
    masker = MLMMasker(VOCAB, SPECIAL)
    got = masked(instances, masker, seed=0)
    rng = np.random.default_rng(0)
    for start in range(0, len(instances), 1024):
        chunk = instances[start:start + 1024]
        ids, labels = masker(pad([x.input_ids for x in chunk], PAD), rng)
        for y, row_ids, row_labels in zip(got[start:start + 1024], ids, labels):
            n = len(y.input_ids)
            assert y.input_ids.tolist() == row_ids[:n].tolist()
            assert y.mlm_labels.tolist() == row_labels[:n].tolist()


# ----------------------------------------------------------------------------------------------
# The original recipe: a target length per document, 15% of all the pair's tokens


def is_next_lengths_by_document(instances, document_length):
    """{document: the lengths (A + B) of its IsNext pairs that stop before its end}."""
    lengths = {}
    for x in instances:
        if not x.is_random_next:
            a, b = split(x)
            document, _, last = locate(b)
            if last < document_length - 1:
                lengths.setdefault(document, set()).add(len(a) + len(b))
    return lengths


@pytest.fixture(scope="module")
def long_documents():
    return documents_from_lengths([[1] * 600 for _ in range(1000)])  # one-token segments


def test_the_original_recipe_draws_one_target_per_document(long_documents):
    # With one-token segments an IsNext pair is exactly its target long. The original keeps one
    # target for the whole document: short (uniform in [2, 30], so < 30 with probability 28/29)
    # for a share 0.1 * 28 / 29 of the documents, the full 30 tokens for the rest.
    instances = instances_of(long_documents, max_seq_len=33, dupe_factor=1, seed=5,
                             recipe="original")
    by_document = is_next_lengths_by_document(instances, 600)
    assert len(by_document) == 1000
    assert all(len(lengths) == 1 for lengths in by_document.values())
    targets = np.array([lengths.pop() for lengths in by_document.values()])  # (D,)
    n, p = len(targets), 0.1 * 28 / 29
    assert abs((targets < 30).sum() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    # Each pair uses up 3/4 of its target on average (IsNext: all of its chunk; NotNext: its A,
    # half of the chunk on average, the rest is put back), so a document of L tokens makes
    # about 4L / 3t pairs; the last, shorter chunk of each document adds about one more.
    expected = sum(4 * 600 / (3 * t) for t in targets) + n
    assert abs(len(instances) - expected) <= 0.03 * expected
    course = instances_of(long_documents, max_seq_len=33, dupe_factor=1, seed=5)
    many = sum(len(lengths) > 1 for lengths in is_next_lengths_by_document(course, 600).values())
    assert many > 300  # the course's recipe draws a target per pair: documents mix lengths


def test_pairs_take_21_bytes_each():
    assert PAIR.itemsize == 21


# ----------------------------------------------------------------------------------------------
# Masking

VOCAB = 1000


def random_instances(seed, rows, max_side=60, unk_rate=0.05):
    """[CLS] A [SEP] B [SEP] of random ordinary ids, with some [UNK] (special, never picked)."""
    rng = np.random.default_rng(seed)
    instances = []
    for _ in range(rows):
        n_a, n_b = rng.integers(1, max_side, 2)
        ids = rng.integers(OFFSET, VOCAB, n_a + n_b)
        ids[rng.random(n_a + n_b) < unk_rate] = UNK
        row = np.concatenate([[CLS], ids[:n_a], [SEP], ids[n_a:], [SEP]]).astype(np.int32)
        instances.append(PretrainingInstance(row, int(n_a), False))
    return instances


def expected_count(n, p=0.15, max_predictions=20):
    return min(max_predictions, max(1, round(n * p)), n)


@pytest.mark.parametrize("p", [0.15, 0.1, 0.3])
def test_num_to_predict_is_the_original_formula(p):
    masker = MLMMasker(VOCAB, SPECIAL, masked_lm_prob=p, max_predictions_per_seq=40)
    n = np.arange(600)
    expected = [expected_count(i, p, 40) for i in range(600)]  # Python's round, halves to even
    assert masker.num_to_predict(n).tolist() == expected


@pytest.fixture(scope="module")
def masked_batch():
    ids = pad([x.input_ids for x in random_instances(0, rows=3000)], PAD)  # (B, T)
    masker = MLMMasker(VOCAB, SPECIAL)
    masked, labels = masker(ids, np.random.default_rng(0))
    return ids, masked, labels


def test_exact_count_and_never_a_special_token(masked_batch):
    ids, masked, labels = masked_batch
    picked = labels != IGNORE_INDEX
    n = (ids >= OFFSET).sum(1)  # non-special tokens per row
    assert picked.sum(1).tolist() == [expected_count(i) for i in n.tolist()]
    assert (ids[picked] >= OFFSET).all()  # [PAD] [UNK] [CLS] [SEP] never picked
    assert np.array_equal(labels[picked], ids[picked])
    assert np.array_equal(masked[~picked], ids[~picked])  # nothing else changes
    # Rounding moves each row's count by at most half a token from 15% of its tokens.
    assert abs(picked.sum().item() - 0.15 * n.sum().item()) <= 0.5 * len(n)


def test_picked_tokens_are_80_percent_mask_10_random_10_kept(masked_batch):
    ids, masked, labels = masked_batch
    picked = labels != IGNORE_INDEX
    seen, original = masked[picked], ids[picked]
    n = len(seen)
    assert n > 25_000
    replacements = VOCAB - len(SPECIAL.all_ids)
    p_kept = 0.1 + 0.1 / replacements  # a random replacement can draw the token itself
    for count, p in [((seen == MASK).sum(), 0.8), ((seen == original).sum(), p_kept),
                     (((seen != MASK) & (seen != original)).sum(), 0.1 - 0.1 / replacements)]:
        assert abs(count.item() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    assert (seen[seen != MASK] >= OFFSET).all()  # a random token is never special


def test_picks_are_uniform_over_positions():
    # 4000 rows of 40 ordinary tokens get 6 picks each: every position is picked with
    # probability 0.15 (a rule that favoured, say, the first tokens would fail).
    rows = 4000
    rng = np.random.default_rng(1)
    ids = np.concatenate([np.full((rows, 1), CLS), rng.integers(OFFSET, VOCAB, (rows, 40)),
                          np.full((rows, 1), SEP)], axis=1)
    _, labels = MLMMasker(VOCAB, SPECIAL)(ids, rng)
    rate = (labels[:, 1:-1] != IGNORE_INDEX).mean(0)  # (40,)
    assert np.abs(rate - 0.15).max() <= 5 * math.sqrt(0.15 * 0.85 / rows)


def test_random_replacements_are_uniform_over_ordinary_tokens():
    vocab = 15  # ids 5..14 are the ten ordinary tokens
    masker = MLMMasker(vocab, SPECIAL)
    rng = np.random.default_rng(2)
    ids = rng.integers(OFFSET, vocab, (1000, 100))
    seen = masker.corrupt(ids, np.ones(ids.shape, dtype=bool), rng)
    replaced = seen[seen != MASK]  # 10% random + 10% kept: 20k draws, 2k per ordinary id
    counts = np.bincount(replaced, minlength=vocab)
    assert counts[:OFFSET].sum() == 0
    n, p = len(replaced), 1 / 10
    assert np.abs(counts[OFFSET:] - n * p).max() <= 5 * math.sqrt(n * p * (1 - p))


def words_of(row, is_continuation, special=SPECIAL):
    """Position lists of the words of a row: a "##" piece joins the word before it, and no word
    reaches across a special token."""
    words = []
    for i, t in enumerate(row):
        if t in special.all_ids:
            continue
        if is_continuation(t) and i > 0 and row[i - 1] not in special.all_ids:
            words[-1].append(i)
        else:
            words.append([i])
    return words


def wwm_row(rng):
    """[CLS] A [SEP] B [SEP] of words of 1 to 4 pieces (heads 5..499, "##" pieces 500..999);
    half of the time B starts with a "##" piece."""
    row = [CLS]
    for side in range(2):
        for w in range(rng.integers(1, 15)):
            pieces = rng.integers(500, VOCAB, rng.integers(1, 5))
            if not (side == 1 and w == 0 and rng.random() < 0.5):
                pieces[0] = rng.integers(OFFSET, 500)
            row += pieces.tolist()
        row.append(SEP)
    return row


def test_whole_word_masking_never_splits_a_word():
    masker = MLMMasker(VOCAB, SPECIAL, continuation_ids=range(500, VOCAB))
    rng = np.random.default_rng(3)
    rows = [wwm_row(rng) for _ in range(1000)]
    ids = pad(rows, PAD)
    _, labels = masker(ids, rng)
    exact = 0
    for row, row_labels in zip(ids.tolist(), labels.tolist()):
        words = words_of(row, lambda t: t >= 500)
        picked = [[row_labels[i] != IGNORE_INDEX for i in w] for w in words]
        assert all(all(p) or not any(p) for p in picked)  # whole words or nothing
        k = expected_count(sum(map(len, words)))
        count = sum(len(w) for w, p in zip(words, picked) if p[0])
        assert count <= k
        # Words that would overshoot are skipped and the walk goes on, so no word left out
        # would still have fit.
        assert all(len(w) > k - count for w, p in zip(words, picked) if not p[0])
        exact += count == k
    assert exact > 900


def test_a_piece_after_sep_is_a_word_of_its_own():
    # [CLS] a ##b [SEP] ##c d [SEP]: 4 tokens -> 1 prediction; the words are {a ##b}, {##c}, {d},
    # so only ##c or d can be picked, and both are.
    masker = MLMMasker(VOCAB, SPECIAL, continuation_ids=[600, 700])
    ids = np.array([[CLS, 10, 600, SEP, 700, 20, SEP]] * 400)
    _, labels = masker(ids, np.random.default_rng(5))
    positions = Counter(np.nonzero(labels != IGNORE_INDEX)[1].tolist())
    assert set(positions) == {4, 5} and sum(positions.values()) == 400


# ----------------------------------------------------------------------------------------------
# Batches


def test_collate_pads_to_the_longest_and_builds_every_input():
    instances = masked(random_instances(1, rows=8), MLMMasker(VOCAB, SPECIAL), seed=0)
    batch = PretrainingCollator(PAD)(instances)
    lengths = [len(x.input_ids) for x in instances]
    B, T = len(instances), max(lengths)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "mlm_labels",
                          "nsp_labels"}
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["nsp_labels"].shape == (B,) and batch["input_ids"].shape == (B, T)
    for i, x in enumerate(instances):
        n = lengths[i]
        assert batch["input_ids"][i, :n].tolist() == x.input_ids.tolist()
        assert batch["mlm_labels"][i, :n].tolist() == x.mlm_labels.tolist()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)
        types = [0] * (x.num_a + 2) + [1] * (n - x.num_a - 2) + [0] * (T - n)
        assert batch["token_type_ids"][i].tolist() == types
        assert (batch["input_ids"][i, n:] == PAD).all()
        assert (batch["mlm_labels"][i, n:] == IGNORE_INDEX).all()


def test_nsp_labels_are_1_for_notnext():
    instances = [PretrainingInstance(np.array([CLS, 9, SEP, 9, SEP], np.int32), 1, r)
                 for r in (False, True, True)]
    batch = PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL))(instances)
    assert batch["nsp_labels"].tolist() == [0, 1, 1]  # 0 = IsNext, as BertForPreTraining


def test_dynamic_masking_changes_the_masks_not_the_content():
    instances = random_instances(2, rows=32, unk_rate=0.0)
    collate = PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL), seed=0)
    first, second = collate(instances), collate(instances)
    assert not torch.equal(first["mlm_labels"], second["mlm_labels"])
    again = PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL), seed=0)(instances)
    assert torch.equal(again["input_ids"], first["input_ids"])  # the seed fixes the stream
    unmasked = torch.from_numpy(pad([x.input_ids for x in instances], PAD))
    for batch in (first, second):
        picked = batch["mlm_labels"] != IGNORE_INDEX
        assert torch.equal(torch.where(picked, batch["mlm_labels"], batch["input_ids"]), unmasked)
        assert torch.equal(batch["token_type_ids"], first["token_type_ids"])
        assert picked.sum(1).tolist() == [expected_count(len(x.input_ids) - 3) for x in instances]


def test_reseeded_masks_depend_on_the_seed_and_key_alone():
    """bertlab.training reseeds the collator for every micro-batch: its masks must not depend
    on what the collator drew before (another worker's batches, a run before a resume)."""
    instances = random_instances(5, rows=16)

    def masks(seed, key, draws_before=0):
        collate = PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL), seed=seed)
        for _ in range(draws_before):
            collate(instances)
        collate.reseed(key)
        return collate(instances)["input_ids"]

    first = masks(0, (0, 7, 0, 1))
    assert torch.equal(masks(0, (0, 7, 0, 1), draws_before=3), first)
    assert not torch.equal(masks(0, (0, 8, 0, 1)), first)
    assert not torch.equal(masks(0, (0, 7, 1, 1)), first)
    assert not torch.equal(masks(1, (0, 7, 0, 1)), first)


def test_dynamic_masking_in_dataloader_workers():
    # Workers reseed from the loader's worker seeds: epochs differ, and the same loader
    # generator gives the same masks again.
    rng = np.random.default_rng(3)
    store = TokenStore.from_token_ids([[rng.integers(OFFSET, VOCAB, rng.integers(1, 10))
                                        for _ in range(40)] for _ in range(4)])
    dataset = PretrainingDataset(store, create_instances(store, 64, dupe_factor=1), SPECIAL,
                                 PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL), seed=0))

    def epochs(seed):
        loader = DataLoader(dataset, batch_size=16, num_workers=2, collate_fn=dataset.collate,
                            generator=torch.Generator().manual_seed(seed))
        return [torch.cat([b["mlm_labels"].flatten() for b in loader]) for _ in range(2)]

    first, second = epochs(0)
    assert not torch.equal(first, second)
    assert torch.equal(first, epochs(0)[0])


def test_collator_refuses_mixed_up_masking():
    unmasked = random_instances(4, rows=2)
    static = masked(unmasked, MLMMasker(VOCAB, SPECIAL))
    with pytest.raises(ValueError, match="not masked"):
        PretrainingCollator(PAD)(unmasked)
    with pytest.raises(ValueError, match="already masked"):
        PretrainingCollator(PAD, MLMMasker(VOCAB, SPECIAL))(static)


# ----------------------------------------------------------------------------------------------
# From text, with a real tokenizer

WORDS = ("the king queen castle night sword unbelievable ghost honour whereof thou art "
         "forsooth crown speak swear").split()


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizers.Tokenizer.from_file(str(bertlab.minilm_path() / "tokenizer.json"))


def texts(seed, num_docs=6, num_lines=60):
    rng = random.Random(seed)
    return ["\n".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
                      + ("\n" if rng.random() < 0.2 else "") for _ in range(num_lines))
            for _ in range(num_docs)]


@pytest.mark.parametrize("dynamic", [False, True])
def test_batches_train_a_tiny_bert(tokenizer, dynamic):
    ds = pretraining_examples(texts(0), tokenizer, max_seq_len=64, dupe_factor=1,
                              dynamic_masking=dynamic)
    batch = ds.collate([ds[i] for i in range(8)])
    torch.manual_seed(0)
    config = bertlab.BertConfig.tiny(vocab_size=tokenizer.get_vocab_size())
    model = bertlab.BertForPreTraining(config)
    out = model(**batch)
    out.loss.backward()
    assert out.mlm_loss.isfinite() and out.nsp_loss.isfinite()
    assert out.mlm_logits.shape[0] == (batch["mlm_labels"] != IGNORE_INDEX).sum()
    assert all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dynamic", [False, True])
def test_fixed_positions_hold_every_masked_token_and_give_the_same_loss(tokenizer, dynamic):
    """BERT's masked_lm_positions: P = round(0.15 · 64) = 10 per row in every batch, the labelled
    positions first and in order, and the loss of the labels themselves."""
    fixed = pretraining_examples(texts(0), tokenizer, max_seq_len=64, dupe_factor=1,
                                 dynamic_masking=dynamic, fixed_positions=True)
    plain = pretraining_examples(texts(0), tokenizer, max_seq_len=64, dupe_factor=1,
                                 dynamic_masking=dynamic)
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(bertlab.BertConfig.tiny(
        vocab_size=tokenizer.get_vocab_size())).eval()
    for start in (0, 8, 16):
        batch = fixed.collate([fixed[i] for i in range(start, start + 8)])
        labels, positions = batch["mlm_labels"], batch["mlm_positions"]
        assert positions.shape == (8, 10) and positions.dtype == torch.long
        for row, where in zip(labels, positions):
            masked = torch.nonzero(row != IGNORE_INDEX).flatten()
            assert where[:len(masked)].tolist() == masked.tolist()
            assert (row[where[len(masked):]] == IGNORE_INDEX).all()
        same = plain.collate([plain[i] for i in range(start, start + 8)])
        if not dynamic:  # the same static masks
            assert torch.equal(same["mlm_labels"], labels)
        else:
            same = {k: v for k, v in batch.items() if k != "mlm_positions"}
        a, b = model(**batch), model(**same)
        assert a.mlm_logits.shape == (8, 10, tokenizer.get_vocab_size())
        torch.testing.assert_close(a.loss, b.loss)


@pytest.mark.parametrize("dynamic", [False, True])
def test_without_nsp_each_example_is_one_chunk_of_one_document(tokenizer, dynamic):
    """RoBERTa's DOC-SENTENCES: [CLS] consecutive lines of one document [SEP], about the full
    length, segment 0 throughout; no NSP label in the batch, so the loss is the MLM loss."""
    docs = texts(1)
    ds = pretraining_examples(docs, tokenizer, max_seq_len=48, dupe_factor=1, short_seq_prob=0.0,
                              dynamic_masking=dynamic, nsp=False)
    store = ds.store
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    bounds = store.segments[store.documents]  # (D + 1,) where each document's tokens start
    lengths = []
    for i in range(len(ds)):
        start, _, length, b_len, _ = ds.pairs[i].item()
        x = ds[i]
        original = x.input_ids if dynamic else np.where(x.mlm_labels >= 0, x.mlm_labels,
                                                        x.input_ids)
        assert b_len == 0 and original[0] == cls and original[-1] == sep and x.num_a == length
        assert original[1:-1].tolist() == store.tokens[start:start + length].tolist()
        assert start in store.segments  # a chunk starts at a line
        document = np.searchsorted(bounds, start, side="right") - 1
        assert start + length <= bounds[document + 1]  # and ends in the same document
        lengths.append(length + 2)
    assert max(lengths) == 48 and np.median(lengths) > 40  # most fill the sequence
    batch = ds.collate([ds[i] for i in range(8)])
    assert "nsp_labels" not in batch and not batch["token_type_ids"].any()
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(bertlab.BertConfig.tiny(
        vocab_size=tokenizer.get_vocab_size()))
    out = model(**batch)
    assert out.nsp_loss is None and torch.equal(out.loss, out.mlm_loss)


def test_fixed_positions_refuse_a_row_with_more_masks_than_fit(tokenizer):
    with pytest.raises(ValueError, match="max_predictions must be a positive integer"):
        PretrainingCollator(0, max_predictions=0)
    ds = pretraining_examples(texts(0), tokenizer, max_seq_len=64, dupe_factor=1)
    tight = PretrainingCollator(0, max_predictions=2)
    with pytest.raises(ValueError, match=r"a row has \d+ masked positions, more than "
                                         "max_predictions=2"):
        tight([ds[i] for i in range(8)])
    short = PretrainingCollator(0, max_predictions=500)([ds[0]])  # more positions than tokens
    assert short["mlm_positions"].shape == (1, 500)


def test_a_trained_wordpiece_tokenizer():
    trained = train_wordpiece(texts(3), vocab_size=200)
    ds = pretraining_examples(texts(4), trained, 32, dupe_factor=1, whole_word_mask=True)
    assert ds.collate.pad_id == 0
    batch = ds.collate(ds.instances)
    picked = batch["mlm_labels"] != IGNORE_INDEX
    assert (batch["mlm_labels"][picked] >= 5).all()  # [PAD] [UNK] [CLS] [SEP] [MASK] are 0-4
    assert ((batch["input_ids"] == 0) == (batch["attention_mask"] == 0)).all()


def instance_data(ds):
    return [(x.input_ids.tolist(), x.mlm_labels.tolist(), x.is_random_next) for x in ds.instances]


def test_same_seed_same_data_other_seed_other_data(tokenizer):
    docs = texts(1)

    def make(seed):
        return instance_data(pretraining_examples(docs, tokenizer, 64, seed, dupe_factor=2))

    first = make(0)
    assert first == make(0)
    assert first != make(1)
    assert len(first) > 50


def test_whole_word_masking_from_a_tokenizer(tokenizer):
    ds = pretraining_examples(texts(2), tokenizer, 64, dupe_factor=1, whole_word_mask=True)
    special = SpecialTokens.from_tokenizer(tokenizer)
    is_continuation = [t.startswith("##") for t, _ in
                       sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    pieces = 0
    for x in ds.instances:
        row, labels = x.input_ids.tolist(), x.mlm_labels.tolist()
        original = [label if label != IGNORE_INDEX else t for t, label in zip(row, labels)]
        for word in words_of(original, lambda t: is_continuation[t], special):
            picked = {labels[i] != IGNORE_INDEX for i in word}
            assert len(picked) == 1
            pieces += len(word) > 1 and picked == {True}
    assert pieces > 0  # "unbelievable" is one token, but "forsooth", "whereof" are not


def test_the_lazy_pairs_from_text_equal_the_in_memory_builders(tokenizer):
    docs = texts(5)
    plain = bertlab.tokenization.unpadded(tokenizer)
    documents = [[plain.encode(line, add_special_tokens=False).ids
                  for line in doc.splitlines() if line.strip()] for doc in docs]
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    expected = [([cls, *a, sep, *b, sep], len(a), is_random_next)
                for a, b, is_random_next in reference_instances(documents, 64, 0.1, 2, seed=4)]
    ds = pretraining_examples(docs, tokenizer, 64, seed=4, dupe_factor=2, dynamic_masking=True)
    assert [(x.input_ids.tolist(), x.num_a, x.is_random_next) for x in ds.instances] == expected


@pytest.mark.parametrize("recipe, full_pair", [("course", 9), ("original", 10)])
def test_the_number_to_predict_counts_what_the_recipe_says(tokenizer, recipe, full_pair):
    # The original counts every token of the pair: round(0.15 * 64) = 10 in a full 64-token
    # pair; the course counts the 61 non-special ones: round(0.15 * 61) = 9.
    ds = pretraining_examples(texts(6), tokenizer, 64, dupe_factor=1, recipe=recipe)
    batch = ds.collate(ds[:len(ds)])
    lengths = batch["attention_mask"].sum(1)  # (B,)
    counted = lengths if recipe == "original" else lengths - 3
    picked = (batch["mlm_labels"] != IGNORE_INDEX).sum(1)
    assert picked.tolist() == [expected_count(n) for n in counted.tolist()]
    assert set(picked[lengths == 64].tolist()) == {full_pair}


# ----------------------------------------------------------------------------------------------
# Bad input


def test_bad_arguments_are_clear_errors(tokenizer):
    docs = documents_from_lengths([[3, 3], [3, 3]])
    with pytest.raises(ValueError, match="at least 5"):
        instances_of(docs, max_seq_len=4)
    with pytest.warns(UserWarning, match="100% of the pairs are NotNext"):
        instances_of(docs, max_seq_len=5)  # the smallest that works: a warning, not an error
    with pytest.raises(ValueError, match="two non-empty documents"):
        instances_of(docs[:1] + [[], [[]]])
    with pytest.raises(ValueError, match="recipe must be one of"):
        instances_of(docs, recipe="google")
    with pytest.raises(ValueError, match="two non-empty documents"):
        pretraining_examples(["one document\nof two lines"], tokenizer)
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="masked_lm_prob"):
            MLMMasker(VOCAB, SPECIAL, masked_lm_prob=p)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="short_seq_prob"):
            instances_of(docs, short_seq_prob=p)
    with pytest.raises(ValueError, match="max_predictions_per_seq"):
        MLMMasker(VOCAB, SPECIAL, max_predictions_per_seq=0)
    with pytest.raises(ValueError, match="dupe_factor"):
        instances_of(docs, dupe_factor=0)
    with pytest.raises(ValueError, match="list of strings"):
        pretraining_examples("a single string is not a list of documents", tokenizer)
    other = train_wordpiece(texts(0), vocab_size=200)
    with pytest.raises(ValueError, match="another tokenizer"):
        pretraining_examples(TokenStore.build(texts(0), other), tokenizer)


def test_a_tokenizer_without_bert_special_tokens_is_refused():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4}
    plain = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    with pytest.raises(ValueError, match=r"no \[MASK\]"):
        pretraining_examples(["hello\nhello", "hello"], plain)


def test_pairs_are_cut_once_beside_a_store_on_disk(tmp_path, monkeypatch):
    """Every process of a distributed run, and every resumed run, reads the pairs the first
    one cut (memory-mapped), for the same settings; other settings cut their own."""
    from bertlab.data import pretraining
    from bertlab.tokenization import train_wordpiece

    texts = ["\n".join(f"line {d} {i} of the work" for i in range(40)) for d in range(4)]
    tokenizer = train_wordpiece(texts, vocab_size=100)
    store = TokenStore.build(texts, tokenizer, tmp_path / "store")
    first = pretraining_examples(store, tokenizer, 32, seed=0, dupe_factor=2, dynamic_masking=True)
    monkeypatch.setattr(pretraining, "create_instances", None)  # cutting again would fail
    again = pretraining_examples(TokenStore.open(tmp_path / "store"), tokenizer, 32, seed=0,
                                 dupe_factor=2, dynamic_masking=True)
    assert isinstance(again.pairs, np.memmap) and np.array_equal(again.pairs, first.pairs)
    monkeypatch.undo()
    other = pretraining_examples(store, tokenizer, 32, seed=1, dupe_factor=2, dynamic_masking=True)
    assert not np.array_equal(other.pairs, first.pairs)
    assert len(list((tmp_path / "store").glob("pairs-*.npy"))) == 2
    assert not list((tmp_path / "store").glob(".pairs-*"))  # nothing half-written left
