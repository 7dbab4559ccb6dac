"""The token store: a corpus tokenized once, round-tripped exactly, built in bounded memory;
and the corpus formats it is built from."""

import gzip
import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tokenizers

import bertlab
from bertlab.data.corpus import Document, load_corpus
from bertlab.data.store import TokenStore


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizers.Tokenizer.from_file(str(bertlab.minilm_path() / "tokenizer.json"))


TEXTS = ["To be, or not to be:\n\n  that is the question.  \nWhether 'tis nobler", "",
         "Once more unto the breach, dear friends, once more;\n" + "castle " * 300]


def expected_segments(tokenizer, text):
    plain = bertlab.tokenization.unpadded(tokenizer)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [plain.encode(line, add_special_tokens=False).ids for line in lines]


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_store_round_trips_its_documents(tokenizer, tmp_path, on_disk):
    assert tokenizer.padding is not None  # the MiniLM tokenizer pads to 128 and truncates
    store = TokenStore.build(iter(TEXTS), tokenizer, tmp_path / "store" if on_disk else None)
    assert len(store) == 3 and store.document(1) == []  # an empty document stays, empty
    for d, text in enumerate(TEXTS):
        assert [s.tolist() for s in store.document(d)] == expected_segments(tokenizer, text)
    assert len(store.document(2)[1]) == 300  # never truncated
    assert store.tokens.dtype == np.uint16  # a vocabulary of 30,522 fits
    assert store.segments[0] == 0 and store.segments[-1] == len(store.tokens)
    if on_disk:
        assert isinstance(store.tokens, np.memmap)
        assert {p.name for p in (tmp_path / "store").iterdir()} == {
            "tokens.bin", "segments.npy", "documents.npy", "meta.json"}
        reopened = TokenStore.open(tmp_path / "store")
        assert np.array_equal(reopened.tokens, store.tokens)
        assert reopened.meta == store.meta
    pickled = pickle.dumps(store)  # what a spawned DataLoader worker receives
    assert (len(pickled) < 1000) == on_disk  # on disk: the folder's name, not the tokens
    unpickled = pickle.loads(pickled)
    assert [s.tolist() for s in unpickled.document(2)] == [s.tolist() for s in store.document(2)]


def test_a_large_vocabulary_takes_uint32():
    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000}
    big = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    big.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    store = TokenStore.build(["w1 w69999\nw5", "w2"], big)
    assert store.tokens.dtype == np.uint32
    assert [s.tolist() for s in store.document(0)] == [[1, 69999], [5]]


def test_the_cache_builds_once_per_texts_and_tokenizer(tokenizer, tmp_path, monkeypatch):
    first = TokenStore.cached(TEXTS, tokenizer, tmp_path, key="texts-1")
    monkeypatch.setattr(TokenStore, "build", None)  # a second build would fail
    again = TokenStore.cached(TEXTS, tokenizer, tmp_path, key="texts-1")
    assert np.array_equal(first.tokens, again.tokens)
    monkeypatch.undo()
    TokenStore.cached(TEXTS[:1], tokenizer, tmp_path, key="texts-2")
    assert len(list(tmp_path.glob("store-*"))) == 2


def test_an_unfinished_store_is_refused(tokenizer, tmp_path):
    TokenStore.build(TEXTS, tokenizer, tmp_path / "store")
    (tmp_path / "store" / "meta.json").unlink()  # as a build that died before its end
    with pytest.raises(ValueError, match="no finished token store"):
        TokenStore.open(tmp_path / "store")
    rebuilt = TokenStore.cached(TEXTS, tokenizer, tmp_path, key="k")  # a cache rebuilds it
    assert len(rebuilt) == 3


def test_from_token_ids_drops_empty_segments():
    store = TokenStore.from_token_ids([[[7, 8], [], [9]], [], [[1]]])
    assert [[s.tolist() for s in store.document(d)] for d in range(3)] == [[[7, 8], [9]], [],
                                                                          [[1]]]


# ----------------------------------------------------------------------------------------------
# Corpus formats


def test_a_text_file_holds_documents_separated_by_blank_lines(tmp_path):
    text = "First line.\n  Second   line. \n\n\n\nAnother document.\n\n"
    (tmp_path / "books.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "books.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    expected = [Document("books:1", None, "First line.\nSecond line."),
                Document("books:2", None, "Another document.")]
    assert load_corpus(tmp_path / "books.txt") == expected
    assert load_corpus(tmp_path / "books.txt.gz") == expected


def test_jsonl_with_a_text_field(tmp_path):
    rows = [{"text": "One.\nTwo.", "title": "Numbers"}, {"text": "Three.", "id": 3}]
    with gzip.open(tmp_path / "wiki.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_corpus(tmp_path / "wiki.jsonl.gz") == [Document("Numbers", None, "One.\nTwo."),
                                                       Document("wiki:2", None, "Three.")]
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: expected a JSON object with a "):
        load_corpus(tmp_path / "bad.jsonl")


def test_a_folder_may_hold_gzipped_text(tmp_path):
    (tmp_path / "a.txt").write_text("Plain.", encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("Gzipped.")
    assert [(d.title, d.text) for d in load_corpus(tmp_path)] == [("a", "Plain."),
                                                                 ("b", "Gzipped.")]


def test_an_unknown_format_is_a_clear_error(tmp_path):
    (tmp_path / "notes.md").write_text("text")
    with pytest.raises(ValueError, match="not a folder, a .txt file or a .jsonl file"):
        load_corpus(tmp_path / "notes.md")


# ----------------------------------------------------------------------------------------------
# Memory

BUDGET_MB = 16  # what building may add to the process, for a corpus twice that size

BOUNDED_BUILD = textwrap.dedent("""
    import random, sys, tokenizers
    from bertlab.data.pretraining import create_instances
    from bertlab.data.store import TokenStore
    from bertlab.tokenization import train_wordpiece

    words = [f"word{i}" for i in range(200)]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    rng = random.Random(0)
    lines = [" ".join(rng.choices(words, k=rng.randint(20, 40))) for _ in range(1000)]
    documents = ["\\n".join(rng.choices(lines, k=200)) for _ in range(20)]

    def corpus(megabytes):  # made as it is read: the text is never all in memory
        size = 0
        while size < megabytes * 2**20:
            text = documents[rng.randrange(len(documents))]
            size += len(text)
            yield text

    def peak_mb():
        return next(int(line.split()[1]) for line in open("/proc/self/status")
                    if line.startswith("VmHWM")) / 1024

    def rss_mb():
        return next(int(line.split()[1]) for line in open("/proc/self/status")
                    if line.startswith("VmRSS")) / 1024

    def added_mb(build):
        before = rss_mb()
        open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from here
        result = build()
        return result, peak_mb() - before

    train_wordpiece(corpus(1), vocab_size=300)  # imports and first calls, before measuring
    store = TokenStore.build(corpus(1), tokenizer, sys.argv[1] + "/warm")
    create_instances(store, 128, dupe_factor=1)
    _, wordpiece_mb = added_mb(lambda: train_wordpiece(corpus(int(sys.argv[2])), vocab_size=300))
    store, store_mb = added_mb(
        lambda: TokenStore.build(corpus(int(sys.argv[2])), tokenizer, sys.argv[1] + "/big"))
    pairs, pairs_mb = added_mb(lambda: create_instances(store, 128, dupe_factor=1))
    print(len(store.tokens), len(pairs), wordpiece_mb, store_mb + pairs_mb)
""")


def test_a_corpus_larger_than_the_memory_budget_builds_inside_it(tmp_path):
    megabytes = 2 * BUDGET_MB
    done = subprocess.run([sys.executable, "-c", BOUNDED_BUILD, str(tmp_path), str(megabytes)],
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    tokens, pairs, wordpiece_mb, data_mb = done.stdout.split()
    assert int(tokens) > 4_000_000 and int(pairs) > 40_000
    assert float(wordpiece_mb) < BUDGET_MB  # training keeps word counts, not the text
    assert float(data_mb) < BUDGET_MB  # the store is on disk; the pairs, 21 bytes each


def test_pretrain_help_explains_the_corpus_formats_and_the_store(capsys):
    from bertlab.cli import main
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    for words in ("FOLDER/", "FILE.txt", "FILE.jsonl", "gzipped", "the token store",
                  "memory-mapped", "--store DIR", "--recipe {course,original}"):
        assert words in help_text, words
