"""The corpus: documents of plain text, with the structure of a play where there is one.

The bundled corpus is Shakespeare's works (`data/shakespeare.jsonl.gz`, built by
`scripts/build_corpus.py`, described in `data/README.md`): one `Document` per work, and for
each play its persons and its scenes of speeches. `load_corpus(folder)` reads your own text
instead: one document per `.txt` file.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "shakespeare.jsonl.gz"
GENRES = ("comedy", "history", "tragedy", "poetry")


@dataclass(frozen=True)
class Speech:
    speaker: str  # the speaker tag as printed, without its final period: "Ber", "HAMLET"
    lines: tuple[str, ...]  # the spoken lines, stage directions taken out


@dataclass(frozen=True)
class StageDirection:
    text: str  # without its brackets: "Enter Horatio and Marcellus."
    before_speech: int  # index in Scene.speeches of the first speech that begins after it


@dataclass(frozen=True)
class Scene:
    act: int  # 1-5; 0 before the first act (an induction, a prologue)
    scene: int  # 1, 2, ...; 0 for an act's prologue or chorus before its first scene
    heading: str  # as printed: "Scene I. Elsinore. A platform before the Castle."
    speeches: tuple[Speech, ...]
    directions: tuple[StageDirection, ...]


@dataclass(frozen=True)
class Document:
    title: str
    genre: str | None  # "comedy", "history", "tragedy", "poetry"; None for your own text
    text: str  # the whole work, a blank line between paragraphs (and between speeches)
    persons: tuple[str, ...] = ()  # a play's list of persons, names only: "Claudius", "Horatio"
    scenes: tuple[Scene, ...] = ()  # a play's scenes in order; empty for poems and your text


def normalize_text(text: str) -> str:
    """Plain text with tidy whitespace: `\\n` line ends, no indentation or trailing spaces,
    single spaces inside lines, one blank line between paragraphs."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def load_corpus(path: str | os.PathLike | None = None) -> list[Document]:
    """The bundled Shakespeare corpus, or with `path` a folder of `.txt` files (one document
    per file, titled by the file name without `.txt`; paragraphs separated by blank lines)."""
    if path is None:
        if not BUNDLED.is_file():
            raise FileNotFoundError(f"the bundled corpus {BUNDLED} is missing: it ships with the "
                                    "repository (install with `pip install -e .` from a checkout)")
        return read_jsonl(BUNDLED)
    return read_text_folder(Path(path))


def read_jsonl(file: Path) -> list[Document]:
    with gzip.open(file, "rt", encoding="utf-8") as f:
        return [document_from_dict(json.loads(line)) for line in f]


def document_from_dict(d: dict) -> Document:
    scenes = tuple(
        Scene(s["act"], s["scene"], s["heading"],
              tuple(Speech(p["speaker"], tuple(p["lines"])) for p in s["speeches"]),
              tuple(StageDirection(x["text"], x["before_speech"]) for x in s["directions"]))
        for s in d["scenes"])
    return Document(d["title"], d["genre"], d["text"], tuple(d["persons"]), scenes)


def read_text_folder(folder: Path) -> list[Document]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: load_corpus expects a folder of .txt files")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise ValueError(f"{folder} holds no .txt files: put one .txt file per document there")
    return [Document(title=file.stem, genre=None, text=read_text_file(file)) for file in files]


def read_text_file(file: Path) -> str:
    try:
        text = normalize_text(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{file} is not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 old.txt > new.txt`") from None
    if not text:
        raise ValueError(f"{file} is empty: remove it or give it some text")
    return text
