"""Tokenizers: the real BERT vocab against transformers (the oracle), and WordPiece training."""

import pytest
import torch
from transformers import AutoTokenizer

import bertlab
from bertlab.data import load_corpus
from bertlab.tokenization import (
    SPECIAL_TOKENS,
    encode,
    load_bert_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_wordpiece,
)

TRICKY = [
    "Café naïve résumé", "ÅNGSTRÖM Ünïcödé façade ﬁne",  # accents, a ligature
    "Hello, world!!! (yes) -- \"quoted\" 'single' don't o'er",  # punctuation, apostrophes
    "In 1599, 3.14159 and 1,000,000 ducats; 2nd act.",  # digits
    "東京は日本の首都です。中文字符", "I love 🤗 emoji 😀👍🏽",  # CJK, emoji
    "a" * 150 + " short", "x" * 100, "y" * 101,  # words at and past BERT's 100 characters
    "", "   \t\n ",  # empty, whitespace only
    "ctrl\x00char\x07s zero\u200bwidth soft\u00adhyphen",  # control and format characters
    "The [MASK] sat on the mat.",  # a special token inside the text
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
]
PAIRS = [text[::-1] for text in TRICKY]
CASES = {  # (pairs, max_length, padding)
    "single": (None, 512, True),
    "pairs": (PAIRS, 512, True),
    "truncated": (None, 9, True),
    "truncated pairs, longest first": (PAIRS, 14, True),
    "padded to max_length": (PAIRS, 64, "max_length"),
}


@pytest.fixture(scope="module")
def bert():
    return load_bert_tokenizer(bertlab.minilm_path() / "vocab.txt")


@pytest.fixture(scope="module")
def oracle():
    return AutoTokenizer.from_pretrained(bertlab.minilm_path())


@pytest.fixture(scope="module")
def trained():
    plays = load_corpus()[:3]
    return train_wordpiece([doc.text for doc in plays], vocab_size=2000)


@pytest.mark.parametrize("case", CASES)
def test_bert_tokenizer_matches_transformers(bert, oracle, case):
    pairs, max_length, padding = CASES[case]
    ours = encode(bert, TRICKY, pairs, max_length=max_length, padding=padding)
    theirs = oracle(TRICKY, pairs, truncation=True, max_length=max_length, padding=padding,
                    return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_longest_first_truncation_trims_the_longer_of_a_pair(bert):
    long, short = "one two three four five six seven eight nine ten", "a b"
    batch = encode(bert, [long], [short], max_length=9)
    assert batch["token_type_ids"][0].tolist() == [0] * 6 + [1] * 3  # [CLS] 4 [SEP] | 2 [SEP]
    assert bert.decode(batch["input_ids"][0].tolist()) == "one two three four a b"


def test_bert_tokenizer_details(bert, oracle):
    assert [bert.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 100, 101, 102, 103]
    assert bert.encode("y" * 101).tokens == ["[CLS]", "[UNK]", "[SEP]"]  # too long: one [UNK]
    assert bert.encode("Café playing").tokens == ["[CLS]", "cafe", "playing", "[SEP]"]
    for text in TRICKY:
        ids = bert.encode(text).ids
        assert bert.decode(ids) == oracle.decode(ids, skip_special_tokens=True)


def test_trained_tokenizer_special_tokens(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert trained.token_to_id("[PAD]") == bertlab.BertConfig().pad_token_id
    assert trained.get_vocab_size() == 2000
    assert any(token.startswith("##") for token in trained.get_vocab())
    assert trained.encode("[MASK]").tokens == ["[CLS]", "[MASK]", "[SEP]"]


def test_trained_tokenizer_pairs_have_segment_ids(trained):
    encoding = trained.encode("Good morrow, cousin.", "Is the day so young?")
    sep = encoding.tokens.index("[SEP]")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert encoding.type_ids == [0] * (sep + 1) + [1] * (len(encoding.ids) - sep - 1)
    batch = encode(trained, ["Good morrow.", "Is the day so young, my lord?"], ["Ay.", "No."])
    assert batch["attention_mask"][0].tolist().count(0) > 0  # the shorter pair is padded ...
    padding = batch["attention_mask"][0] == 0
    assert (batch["input_ids"][0][padding] == 0).all()  # ... with [PAD] = 0
    assert (batch["token_type_ids"][0][padding] == 0).all()


def test_trained_tokenizer_lowercases_and_strips_accents(trained):
    assert trained.encode("CAFÉ Naïve KING").ids == trained.encode("cafe naive king").ids
    assert trained.decode(trained.encode("The King is dead.").ids) == "the king is dead."
    cased = train_wordpiece(["The King and the king. " * 20], vocab_size=60, lowercase=False,
                            min_frequency=1)
    assert cased.encode("King").ids != cased.encode("king").ids


def test_save_and_load(trained, tmp_path):
    file = save_tokenizer(trained, tmp_path / "tok")
    assert file == tmp_path / "tok" / "tokenizer.json"
    for loaded in (load_tokenizer(tmp_path / "tok"), load_tokenizer(file)):
        assert loaded.get_vocab() == trained.get_vocab()
        pair = ("Now is the winter of our discontent", "Made glorious summer")
        assert loaded.encode(*pair).ids == trained.encode(*pair).ids
        assert loaded.encode(*pair).type_ids == trained.encode(*pair).type_ids


def test_encode_leaves_the_tokenizer_as_it_was():
    minilm = load_tokenizer(bertlab.minilm_path())  # its tokenizer.json pads and truncates to 128
    before = minilm.truncation, minilm.padding
    assert encode(minilm, ["a short one"])["input_ids"].shape == (1, 5)
    assert (minilm.truncation, minilm.padding) == before


def test_errors(bert, trained, tmp_path):
    with pytest.raises(ValueError, match="no tokenizer at"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="not a file"):
        load_bert_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("the\nking\n")
    with pytest.raises(ValueError, match=r"has no \[PAD\] \[UNK\] \[CLS\] \[SEP\] \[MASK\]"):
        load_bert_tokenizer(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="no text to train on"):
        train_wordpiece(["", "  "], vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        train_wordpiece(["some text"], vocab_size=5)
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        encode(trained, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="lists of strings"):
        encode(trained, "a single string")
    with pytest.raises(ValueError, match="different lengths"):
        encode(trained, ["a", "a b c"], padding=False)
