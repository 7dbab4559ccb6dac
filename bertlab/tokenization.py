"""Tokenizers, built from Hugging Face `tokenizers` parts: BERT's WordPiece, trained or loaded.

Both kinds are the same pipeline: clean and lowercase the text (BertNormalizer), split it into
words and punctuation (BertPreTokenizer), cut each word into the longest vocabulary pieces
("playing" -> "play", "##ing"), then add [CLS] and [SEP] around one sentence or a pair, with
segment (token type) ids 0 for the first and 1 for the second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # a trained vocab's ids 0-4
MAX_WORD_CHARS = 100  # a longer word becomes a single [UNK], as in BERT


def bert_pipeline(model: WordPiece, lowercase: bool) -> Tokenizer:
    """A tokenizer around a WordPiece model, with BERT's normalizer, pre-tokenizer and decoder."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def add_bert_template(tokenizer: Tokenizer) -> Tokenizer:
    """[CLS] A [SEP] (segment 0), then B [SEP] (segment 1) for a pair."""
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"the vocabulary has no {' '.join(missing)}; BERT needs all of "
                         f"{' '.join(SPECIAL_TOKENS)}")
    tokenizer.add_special_tokens(SPECIAL_TOKENS)  # "[MASK]" in a text stays one token
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return tokenizer


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True,
                    min_frequency: int = 2) -> Tokenizer:
    """Train a BERT WordPiece tokenizer on `texts`; [PAD] [UNK] [CLS] [SEP] [MASK] get ids 0-4.

    `texts` is read one text at a time (a generator reading files works): training keeps word
    counts, never the corpus, so a large corpus need not fit in memory.

    Training is not exactly repeatable: `tokenizers` breaks ties between equally frequent merges
    in an order that changes from run to run (huggingface/tokenizers#1794), so two trainings on
    the same text may differ in a few tokens. Save the tokenizer alongside the model it serves.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, "
                         f"got {vocab_size}")
    tokenizer = bert_pipeline(WordPiece(unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS),
                              lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS,
                                        continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    if tokenizer.get_vocab_size() == len(SPECIAL_TOKENS):
        raise ValueError("no text to train on: texts held no words")
    return add_bert_template(tokenizer)


def load_bert_tokenizer(vocab_txt: str | os.PathLike, lowercase: bool = True) -> Tokenizer:
    """The original BERT tokenizer from its `vocab.txt` (one token per line, id = line number);
    `lowercase=True` for the uncased models."""
    if not Path(vocab_txt).is_file():
        raise ValueError(f"{vocab_txt} is not a file: expected a BERT vocab.txt")
    vocab = WordPiece.read_file(str(vocab_txt))
    model = WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    return add_bert_template(bert_pipeline(model, lowercase))


def save_tokenizer(tokenizer: Tokenizer, directory: str | os.PathLike) -> Path:
    """Write `directory/tokenizer.json` (the format `tokenizers` and `transformers` read)."""
    path = Path(directory) / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a `tokenizer.json`, given the file or the directory that holds it."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no tokenizer at {path}: expected a tokenizer.json file or a directory "
                         "containing one (write one with save_tokenizer)")
    return Tokenizer.from_file(str(file))


def encode(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
           max_length: int = 512, padding: bool | str = True) -> dict[str, torch.Tensor]:
    """Encode a batch (of sentences, or of pairs `texts[i], pairs[i]`) into BERT's inputs.

    Sequences longer than `max_length` are truncated, the longer of a pair first. `padding=True`
    pads to the longest in the batch, "max_length" to `max_length`, False not at all (then all
    must have the same length). The tokenizer itself is left as it was.
    """
    if isinstance(texts, str) or (pairs is not None and isinstance(pairs, str)):
        raise ValueError("texts and pairs must be lists of strings, not a single string")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs: give one pair per text")
    if len(texts) == 0:
        raise ValueError("no texts to encode")
    if tokenizer.token_to_id("[PAD]") is None:
        raise ValueError("the tokenizer has no [PAD] token to pad with")
    if padding not in (True, False, "max_length"):
        raise ValueError(f"padding must be True, False or 'max_length', got {padding!r}")
    tokenizer = unpadded(tokenizer, max_length)
    if padding:
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]",
                                 length=max_length if padding == "max_length" else None)
    batch = tokenizer.encode_batch(list(texts) if pairs is None else list(zip(texts, pairs)))
    if len({len(e.ids) for e in batch}) > 1:
        raise ValueError("sequences of different lengths without padding: use padding=True")
    return {"input_ids": torch.tensor([e.ids for e in batch], dtype=torch.long),  # (B, T)
            "token_type_ids": torch.tensor([e.type_ids for e in batch], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in batch], dtype=torch.long)}


def unpadded(tokenizer: Tokenizer, max_length: int | None = None,
             strategy: str = "longest_first") -> Tokenizer:
    """A copy of `tokenizer` that never pads and truncates to `max_length` tokens (None: never),
    whatever padding and truncation the original has."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    if max_length is None:
        copy.no_truncation()
    else:
        copy.enable_truncation(max_length, strategy=strategy)
    return copy
