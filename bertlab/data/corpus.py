"""The corpus: documents of plain text, with the structure of a play where there is one.

The bundled corpus is Shakespeare's works (`data/shakespeare.jsonl.gz`, built by
`scripts/build_corpus.py`, described in `data/README.md`): one `Document` per work, and for
each play its persons and its scenes of speeches. `load_corpus(path)` reads your own text
instead, in any of these forms (each may be gzipped, `.gz`):

    a folder of .txt files   one document per file, titled by the file name without .txt
    a .txt file              documents separated by blank lines, one segment (sentence) per
                             line, as Google's create_pretraining_data.py reads; titled FILE:N
    a .jsonl file            one JSON object per line with a "text" field (and optionally a
                             "title"; else FILE:N), as Hugging Face datasets write

`iter_documents(path)` reads the same one document at a time.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
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
    """The bundled Shakespeare corpus, or with `path` your own text (see the module docstring)."""
    return list(iter_documents(path))


def iter_documents(path: str | os.PathLike | None = None) -> Iterator[Document]:
    """The documents of `load_corpus(path)`, read one at a time."""
    if path is None:
        if not BUNDLED.is_file():
            raise FileNotFoundError(f"the bundled corpus {BUNDLED} is missing: it ships with the "
                                    "repository (install with `pip install -e .` from a checkout)")
        with gzip.open(BUNDLED, "rt", encoding="utf-8") as f:
            yield from (document_from_dict(json.loads(line)) for line in f)
        return
    path = Path(path)
    if path.is_dir():
        yield from read_text_folder(path)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        yield from read_jsonl(path)
    elif path.name.endswith((".txt", ".txt.gz")):
        yield from read_documents_file(path)
    else:
        raise ValueError(f"{path} is not a folder, a .txt file or a .jsonl file (optionally "
                         ".gz): see `bertlab pretrain --help` for the corpus formats")


def open_text(file: Path):
    """A text file for reading, gunzipped if its name ends in .gz."""
    if not file.is_file():
        raise ValueError(f"{file} does not exist")
    return (gzip.open(file, "rt", encoding="utf-8") if file.name.endswith(".gz")
            else open(file, encoding="utf-8"))


def not_utf8(file: Path, e: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{file} is not UTF-8 text (byte {e.start}: {e.reason}); convert it to "
                      "UTF-8, e.g. `iconv -f latin1 -t utf-8 old.txt > new.txt`")


def read_documents_file(file: Path) -> Iterator[Document]:
    """Documents separated by blank lines, one segment per line."""
    lines, n = [], 0
    try:
        with open_text(file) as f:
            for line in chain(f, [""]):
                if line.strip():
                    lines.append(line)
                elif lines:
                    n += 1
                    yield Document(f"{stem(file)}:{n}", None, normalize_text("".join(lines)))
                    lines = []
    except UnicodeDecodeError as e:
        raise not_utf8(file, e) from None
    if not n:
        raise ValueError(f"{file} holds no text")


def read_jsonl(file: Path) -> Iterator[Document]:
    """One JSON object per line, its text in "text" (and its title, if any, in "title")."""
    try:
        with open_text(file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{file} line {n}: expected a JSON object with a \"text\" "
                                     "string")
                yield Document(str(record.get("title") or f"{stem(file)}:{n}"), None,
                               normalize_text(record["text"]))
    except UnicodeDecodeError as e:
        raise not_utf8(file, e) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not JSON lines ({e.msg} at line {e.lineno})") from None


def stem(file: Path) -> str:
    """The file's name without .txt, .jsonl or .gz."""
    return re.sub(r"(\.txt|\.jsonl)?(\.gz)?$", "", file.name)


def document_from_dict(d: dict) -> Document:
    scenes = tuple(
        Scene(s["act"], s["scene"], s["heading"],
              tuple(Speech(p["speaker"], tuple(p["lines"])) for p in s["speeches"]),
              tuple(StageDirection(x["text"], x["before_speech"]) for x in s["directions"]))
        for s in d["scenes"])
    return Document(d["title"], d["genre"], d["text"], tuple(d["persons"]), scenes)


def read_text_folder(folder: Path) -> Iterator[Document]:
    files = sorted([*folder.glob("*.txt"), *folder.glob("*.txt.gz")])
    if not files:
        raise ValueError(f"{folder} holds no .txt files: put one .txt file per document there")
    for file in files:
        yield Document(title=stem(file), genre=None, text=read_text_file(file))


def read_text_file(file: Path) -> str:
    try:
        with open_text(file) as f:
            text = normalize_text(f.read())
    except UnicodeDecodeError as e:
        raise not_utf8(file, e) from None
    if not text:
        raise ValueError(f"{file} is empty: remove it or give it some text")
    return text
