"""Your own labelled data for sequence classification: CSV, TSV or JSONL files.

    data = read_labelled_files("train.csv", dev="dev.csv", text="review", label="stars")
    data.train[0]      # ClassificationExample(text=..., label=2, work='train.csv:1')
    data.label_names   # ('1', '2', '3', '4', '5'): the training file's labels, sorted

The format comes from the file name: `.csv`, `.tsv` (a header row names the columns) or `.jsonl`
(one JSON object a line). Each row has a text, optionally a second text (`text_pair`, to classify
pairs) and a label. Rows are counted from 1, the header not included.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .tasks import ClassificationExample

FORMATS = (".csv", ".tsv", ".jsonl")


@dataclass(frozen=True)
class LabelledData:
    train: list[ClassificationExample]
    dev: list[ClassificationExample] | None
    test: list[ClassificationExample] | None
    label_names: tuple[str, ...]  # label i of an example is label_names[i]


def read_rows(path: Path) -> list[dict]:
    """The file's rows as dicts, by its format."""
    if path.suffix not in FORMATS:
        raise ValueError(f"{path}: cannot tell the format from the name; use a file ending in "
                         f"{', '.join(FORMATS)}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {n}: expected a JSON object, got {row!r:.40}")
            rows.append(row)
        return rows
    return list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))


def read_examples(path: Path, columns: dict[str, str | None]) -> list[tuple[str, str | None, str]]:
    """(text, text_pair, label) of every row; `columns` names the file's columns for each."""
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    wanted = [c for c in columns.values() if c is not None]
    missing = [c for c in wanted if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; it has "
                         f"{', '.join(map(repr, rows[0]))} (choose them with --text-column, "
                         "--pair-column, --label-column)")
    examples = []
    for n, row in enumerate(rows, 1):
        values = {role: row.get(name) for role, name in columns.items() if name is not None}
        for role, value in values.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"{path}, row {n}: the {role} ({columns[role]!r}) is empty")
        examples.append((str(values["text"]), values.get("text_pair") and
                         str(values["text_pair"]), str(values["label"])))
    return examples


def sorted_labels(labels: set[str]) -> tuple[str, ...]:
    """Numbers in numeric order ("2" before "10"), anything else alphabetically."""
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    return tuple(sorted(labels, key=int if numeric else str))


def read_labelled_files(train: str | Path, dev: str | Path | None = None,
                        test: str | Path | None = None, *, text: str = "text",
                        text_pair: str | None = None, label: str = "label") -> LabelledData:
    """Read a training file and optional dev and test files into classification examples.

    The label names are the training file's labels; a dev or test label never seen in training
    is an error naming the file and row."""
    columns = {"text": text, "text_pair": text_pair, "label": label}
    read = {split: (Path(path), read_examples(Path(path), columns))
            for split, path in (("train", train), ("dev", dev), ("test", test)) if path is not None}
    names = sorted_labels({y for _, _, y in read["train"][1]})
    index = {name: i for i, name in enumerate(names)}
    splits = {}
    for split, (path, rows) in read.items():
        for n, (_, _, y) in enumerate(rows, 1):
            if y not in index:
                raise ValueError(f"{path}, row {n}: label {y!r} never occurs in the training "
                                 f"file {read['train'][0]} (its labels: {', '.join(names)})")
        splits[split] = [ClassificationExample(a, index[y], f"{path.name}:{n}", b)
                         for n, (a, b, y) in enumerate(rows, 1)]
    return LabelledData(splits["train"], splits.get("dev"), splits.get("test"), names)
