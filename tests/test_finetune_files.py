"""`bertlab finetune --train-file`: sequence classification on your own CSV, TSV or JSONL, label
names kept in config.json, and one-line errors that name the file and row."""

import csv
import json
import random

import pytest
import transformers
from conftest import tiny_checkpoint

from bertlab import BertForSequenceClassification, cli
from bertlab.data.files import read_labelled_files

WORDS = {"good": "great fine lovely happy bright", "bad": "awful sad grim dull broken"}


def rows(n: int, seed: int) -> list[dict]:
    """Sentences whose words give their label away: easy to learn in a few steps."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(sorted(WORDS))
        words = rng.choices(WORDS[label].split(), k=4)
        out.append({"review": " ".join(words), "other": rng.choice(["a", "b"]), "stars": label})
    return out


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    texts = [" ".join(WORDS.values())] * 20 + ["a b c d e"]
    return tiny_checkpoint(tmp_path_factory.mktemp("init"), texts, 200, 32)


def write(path, table: list[dict]):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in table), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]),
                                    delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(table)
    return path


def finetune(init, out, *extra):
    return cli.main(["finetune", "--init", str(init), "--text-column", "review",
                     "--label-column", "stars", "--min-steps", "30", "--batch-size", "16",
                     "--lr", "3e-3", "--max-seq-len", "32", "--checkpoint-every", "0",
                     "--out", str(out), *extra])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_own_files_train_and_keep_the_label_names(init, tmp_path, suffix, capsys):
    train = write(tmp_path / f"train{suffix}", rows(96, 0))
    test = write(tmp_path / f"test{suffix}", rows(40, 1))
    assert finetune(init, tmp_path / "run", "--train-file", str(train),
                    "--test-file", str(test)) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"] == "classify" and "dev" not in results
    assert results["test"]["accuracy"] >= 0.9  # the words give the label away
    assert "test accuracy" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"}
    assert config["label2id"] == {"bad": 0, "good": 1}
    assert transformers.BertConfig.from_pretrained(tmp_path / "run").id2label == {0: "bad",
                                                                                   1: "good"}
    model = BertForSequenceClassification.from_pretrained(tmp_path / "run")
    assert model.config.label_names == ("bad", "good")


def test_a_second_column_makes_pairs(tmp_path):
    train = write(tmp_path / "train.csv", rows(8, 0))
    data = read_labelled_files(train, text="review", text_pair="other", label="stars")
    assert all(x.text_pair in ("a", "b") for x in data.train)
    assert data.train[0].work == "train.csv:1"


def test_numeric_labels_sort_as_numbers(tmp_path):
    table = [{"text": f"t{i}", "label": str(label)} for i, label in enumerate([10, 2, 1, 2])]
    data = read_labelled_files(write(tmp_path / "train.jsonl", table))
    assert data.label_names == ("1", "2", "10")
    assert [x.label for x in data.train] == [2, 1, 0, 1]


@pytest.mark.parametrize("make, message", [
    (lambda d: write(d / "t.csv", [{"text": "x", "label": "a"}]), "no column 'review'"),
    (lambda d: (d / "t.csv").write_text("review,stars\n") and d / "t.csv", "t.csv: no rows"),
    (lambda d: write(d / "t.csv", [*rows(3, 0), {"review": " ", "other": "a", "stars": "good"}]),
     "t.csv, row 4: the text ('review') is empty"),
    (lambda d: write(d / "t.jsonl", [{"review": "x", "stars": "good"}] * 5),
     "a classifier needs at least two"),
    (lambda d: (d / "t.jsonl").write_text('{"review": "x", "stars": "a"}\nnot json\n') and
     d / "t.jsonl", "t.jsonl, line 2: not JSON"),
    (lambda d: (d / "t.csv").write_bytes(b"review,stars\n\xff\xfe,good\n") and d / "t.csv",
     "t.csv: not UTF-8"),
    (lambda d: write(d / "t.txt", rows(3, 0)), "cannot tell the format"),
    (lambda d: d / "missing.csv", "missing.csv: no such file"),
])
def test_bad_files_are_one_line_errors_naming_the_file(init, tmp_path, capsys, make, message):
    train = make(tmp_path)
    assert finetune(init, tmp_path / "run", "--train-file", str(train)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertlab: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_a_test_label_never_seen_in_training_names_its_row(init, tmp_path, capsys):
    train = write(tmp_path / "train.csv", rows(20, 0))
    test = write(tmp_path / "test.csv", [*rows(2, 1), {"review": "x", "other": "a",
                                                        "stars": "meh"}])
    assert finetune(init, tmp_path / "run", "--train-file", str(train),
                    "--test-file", str(test)) == 2
    err = capsys.readouterr().err
    assert "test.csv, row 3: label 'meh' never occurs in the training file" in err


@pytest.mark.parametrize("extra, message", [
    ([], "give --task or --train-file"),
    (["--task", "genre", "--train-file", "x.csv"], "not both"),
    (["--task", "genre", "--test-file", "x.csv"], "--dev-file and --test-file go with"),
])
def test_a_task_or_a_file_not_both(init, tmp_path, capsys, extra, message):
    assert finetune(init, tmp_path / "run", *extra) == 2
    assert message in capsys.readouterr().err
