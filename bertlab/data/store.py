"""The token store: a corpus tokenized once, kept as flat arrays of token ids and offsets.

The layout of Megatron-LM's indexed dataset, in numpy:

    tokens     (N,)   uint16 (uint32 for a vocabulary over 65,536): every segment's ids, end to end
    segments   (S+1,) int64: segment s is tokens[segments[s]:segments[s+1]]
    documents  (D+1,) int64: document d is segments documents[d]:documents[d+1]

A segment is a non-empty line of a document (one that gives no tokens is dropped), without
special tokens. On disk a store is a folder: tokens.bin (the raw ids), segments.npy,
documents.npy and meta.json, written last, so a folder without it is an unfinished build. It is
opened memory-mapped: the operating system pages in the ids that are read, so opening a store
of any size costs almost no memory, and processes that open the same store share its pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..tokenization import unpadded

FORMAT = 1  # bump when the layout changes: a store of another format is rebuilt
BATCH_CHARS = 2**18  # text handed to the batch encoder at once (it uses every core); its
# encodings take ~30 bytes a character, so this bounds the memory a build needs to ~8 MB


class TokenStore:
    """A tokenized corpus (see the module docstring): memory-mapped when opened from a folder."""

    def __init__(self, tokens: np.ndarray, segments: np.ndarray, documents: np.ndarray,
                 meta: dict, directory: Path | None = None):
        self.tokens, self.segments, self.documents, self.meta = tokens, segments, documents, meta
        self.directory = directory  # where it was opened from; None: in memory

    def __reduce__(self):
        """Pickled (for a DataLoader worker that is spawned, not forked) as its folder's name
        when it has one: the worker maps the same files instead of receiving a copy."""
        if self.directory is not None:
            return TokenStore.open, (self.directory,)
        return TokenStore, (self.tokens, self.segments, self.documents, self.meta)

    def __len__(self) -> int:
        return len(self.documents) - 1

    def document(self, d: int) -> list[np.ndarray]:
        """Document d's segments, each (length,) ids."""
        bounds = self.segments[self.documents[d]:self.documents[d + 1] + 1]
        return [self.tokens[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    @classmethod
    def build(cls, texts: Iterable[str], tokenizer: Tokenizer,
              directory: str | os.PathLike | None = None) -> TokenStore:
        """Tokenize `texts` (one per document) into a store: in memory, or written to
        `directory` and opened from there. The texts are read one at a time and encoded in
        batches, so memory holds one batch of lines, never the corpus."""
        dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
        meta = {"format": FORMAT, "dtype": np.dtype(dtype).name,
                "vocab_size": tokenizer.get_vocab_size(), "tokenizer": tokenizer_hash(tokenizer)}
        if directory is None:
            chunks = []
            segment_lengths, segments_per_doc = encode_corpus(texts, tokenizer, dtype,
                                                              chunks.append)
            tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
            return cls(tokens, *offsets(segment_lengths, segments_per_doc), meta)
        directory = Path(directory)
        shutil.rmtree(directory, ignore_errors=True)  # an unfinished build, or another store
        directory.mkdir(parents=True)
        with open(directory / "tokens.bin", "wb") as f:
            segment_lengths, segments_per_doc = encode_corpus(
                texts, tokenizer, dtype, lambda ids: f.write(ids.tobytes()))
        segments, documents = offsets(segment_lengths, segments_per_doc)
        np.save(directory / "segments.npy", segments)
        np.save(directory / "documents.npy", documents)
        meta.update(tokens=int(segments[-1]), segments=len(segments) - 1,
                    documents=len(documents) - 1)
        (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
        return cls.open(directory)

    @classmethod
    def from_token_ids(cls, documents: Sequence[Sequence[Sequence[int]]]) -> TokenStore:
        """A store in memory of documents already tokenized: each a list of segments of ids
        (empty segments are dropped)."""
        segments = [[s for s in document if len(s)] for document in documents]
        tokens = np.fromiter(chain.from_iterable(chain.from_iterable(segments)), np.int64)
        meta = {"format": FORMAT, "dtype": "uint32", "tokenizer": None,
                "vocab_size": int(tokens.max(initial=0)) + 1}
        return cls(tokens.astype(np.uint32), *offsets(
            array("q", (len(s) for document in segments for s in document)),
            array("q", map(len, segments))), meta)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> TokenStore:
        directory = Path(directory)
        if not (directory / "meta.json").is_file():
            raise ValueError(f"{directory} holds no finished token store (no meta.json): build "
                             "one with TokenStore.build")
        meta = json.loads((directory / "meta.json").read_text("utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"the token store in {directory} has format {meta.get('format')}, "
                             f"this bertlab reads {FORMAT}: delete it to rebuild it")
        tokens = (np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r")
                  if meta["tokens"] else np.zeros(0, meta["dtype"]))  # mmap refuses empty files
        return cls(tokens, np.load(directory / "segments.npy", mmap_mode="r"),
                   np.load(directory / "documents.npy", mmap_mode="r"), meta, directory)

    @classmethod
    def cached(cls, texts: Iterable[str], tokenizer: Tokenizer, root: str | os.PathLike,
               key: str) -> TokenStore:
        """The store of `texts` under `root`, in a folder named by `key` (what the texts are)
        and the tokenizer: opened if it is there and finished, else built there first."""
        name = hashlib.sha256(f"{FORMAT} {key} {tokenizer_hash(tokenizer)}".encode()).hexdigest()
        directory = Path(root) / f"store-{name[:16]}"
        if (directory / "meta.json").is_file():
            return cls.open(directory)
        return cls.build(texts, tokenizer, directory)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def text_hash(texts: Iterable[str]) -> str:
    """A fingerprint of a corpus's texts, to key its store by."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def segment_lines(text: str) -> list[str]:
    """A document's segments as text: its non-empty lines, stripped."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def batches_of_documents(texts: Iterable[str]) -> Iterator[list[list[str]]]:
    """Documents as lists of their segments' lines, in runs of about BATCH_CHARS characters (a
    longer document is a batch of its own)."""
    if isinstance(texts, str):
        raise ValueError("documents must be a list of strings, one per document "
                         "(e.g. [d.text for d in load_corpus()])")
    batch, chars = [], 0
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"documents must be strings, one per document, got a "
                             f"{type(text).__name__} (e.g. [d.text for d in load_corpus()])")
        batch.append(segment_lines(text))
        chars += len(text)
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_corpus(texts: Iterable[str], tokenizer: Tokenizer, dtype, write) -> tuple[array, array]:
    """Encode every document, handing its ids (all its segments', end to end) to `write`; returns
    the segments' lengths and each document's number of segments (lines without tokens are
    dropped). A document is encoded as one pre-split sequence whose "words" are its lines: the
    same ids as line by line, in half the time."""
    plain = unpadded(tokenizer)
    segment_lengths, segments_per_doc = array("q"), array("q")
    for documents in batches_of_documents(texts):
        encodings = iter(plain.encode_batch([d for d in documents if d], is_pretokenized=True,
                                            add_special_tokens=False))  # word_ids: the lines
        for lines in documents:
            encoding = next(encodings) if lines else None
            if encoding is not None:
                write(np.array(encoding.ids, dtype))
                line_of_token = np.array(encoding.word_ids, np.int64)  # (tokens,)
                lengths = np.bincount(line_of_token, minlength=len(lines))  # (lines,)
                segment_lengths.extend(lengths[lengths > 0].tolist())
            segments_per_doc.append(0 if encoding is None else int((lengths > 0).sum()))
    return segment_lengths, segments_per_doc


def offsets(segment_lengths: array, segments_per_doc: array) -> tuple[np.ndarray, np.ndarray]:
    """Lengths -> the (S+1,) and (D+1,) offset arrays of the layout."""
    segments = np.zeros(len(segment_lengths) + 1, np.int64)
    np.cumsum(np.frombuffer(segment_lengths, np.int64), out=segments[1:])
    documents = np.zeros(len(segments_per_doc) + 1, np.int64)
    np.cumsum(np.frombuffer(segments_per_doc, np.int64), out=documents[1:])
    return segments, documents
