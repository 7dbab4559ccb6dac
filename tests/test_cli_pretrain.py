"""`bertlab pretrain`: a few steps end to end, an exact resume, a second run from the first
(--init), and one-line errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import small_corpus
from safetensors.torch import load_file

from bertlab import BertForPreTraining, pretrain
from bertlab.cli import main
from bertlab.config import BertConfig
from bertlab.data.corpus import load_corpus
from bertlab.pretrain import pretraining_text
from bertlab.tokenization import load_tokenizer
from bertlab.training import Trainer

BERTLAB = Path(sys.executable).parent / "bertlab"  # the installed console script
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Four short works, 150 spoken lines each: two to train on, two held out."""
    return small_corpus(tmp_path_factory.mktemp("corpus"), works=4, lines=150)


def tiny_run(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--corpus", str(corpus), "--holdout", "work_c", "WORK_D", "--steps", "6",
            "--batch-size", "8", "--max-seq-len", "32", "--vocab-size", "300",
            "--dupe-factor", "1", "--eval-every", "3", "--checkpoint-every", "3",
            "--out", str(out), *extra]


def test_pretrain_writes_a_self_contained_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([BERTLAB, *tiny_run(corpus, run)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 works" in done.stdout and "held-out MLM accuracy" in done.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "metrics.jsonl",
            "pretrain_args.json", "checkpoint-6"} <= {p.name for p in run.iterdir()}

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(3, "eval"), (6, "train"), (6, "eval")]
    assert {"loss", "mlm_acc", "nsp_acc"} <= rows[-1].keys()
    assert {"lr", "tokens_per_s"} <= rows[1].keys()

    ours = BertForPreTraining.from_pretrained(run)
    tokenizer = load_tokenizer(run)
    vocab = (run / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == tokenizer.get_vocab_size() == ours.config.vocab_size
    assert all(tokenizer.token_to_id(token) == i for i, token in enumerate(vocab))

    import transformers  # the run directory is all transformers needs, tokenizer included
    text = "What light through yonder window breaks?"
    theirs_tokenizer = transformers.AutoTokenizer.from_pretrained(run)
    assert theirs_tokenizer(text)["input_ids"] == tokenizer.encode(text).ids
    theirs = transformers.BertForPreTraining.from_pretrained(run).eval()
    batch = theirs_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**batch).prediction_logits
        got = ours.eval()(batch["input_ids"], batch["token_type_ids"],
                          batch["attention_mask"]).mlm_logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_no_nsp_pretrains_with_mlm_alone(corpus, tmp_path, capsys):
    """--no-nsp (RoBERTa): no NSP loss or accuracy anywhere in the log, and the run says so."""
    from bertlab import cli

    assert cli.main(tiny_run(corpus, tmp_path / "run", "--no-nsp")) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert rows and all("nsp_acc" not in r and "mlm_acc" in r for r in rows if r["split"] == "eval")
    assert "NSP" not in capsys.readouterr().out.split("done:")[1]
    assert json.loads((tmp_path / "run" / "pretrain_args.json").read_text())["nsp"] is False


class Interrupted(Exception):
    pass


def test_resume_ends_exactly_where_an_uninterrupted_run_does(corpus, tmp_path, monkeypatch):
    original, trained = pretrain.train_wordpiece, []

    def train_wordpiece_once(texts, **kwargs):  # WordPiece training numbers ## pieces at random
        if not trained:
            trained.append(original(texts, **kwargs))
        return trained[0]

    monkeypatch.setattr(pretrain, "train_wordpiece", train_wordpiece_once)
    assert main(tiny_run(corpus, tmp_path / "whole")) == 0
    update = Trainer.update

    def dies_at_step_5(self, *args):  # after checkpoint-3
        if self.step == 4:
            raise Interrupted
        return update(self, *args)

    monkeypatch.setattr(Trainer, "update", dies_at_step_5)
    with pytest.raises(Interrupted):
        main(tiny_run(corpus, tmp_path / "resumed"))
    monkeypatch.setattr(Trainer, "update", update)
    # the wall time goes on from the checkpoint's: say the first invocation took 1000 s to get there
    state_file = tmp_path / "resumed" / "checkpoint-3" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    assert 0 < state["seconds"] < 600
    torch.save({**state, "seconds": 1000.0}, state_file)
    started = time.perf_counter()
    assert main(tiny_run(corpus, tmp_path / "resumed", "--resume")) == 0
    this_invocation = time.perf_counter() - started
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # masks and all
    made_by = json.loads((tmp_path / "resumed" / "made_by.json").read_text())
    assert 1000 < made_by[-1]["wall_seconds"] <= 1000 + this_invocation + 0.1
    assert "--resume" in made_by[-1]["command"]


def test_a_second_run_starts_from_the_first_with_longer_pairs(corpus, tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    assert main(tiny_run(corpus, short, "--max-seq-len", "16", "--max-positions", "32")) == 0
    assert BertForPreTraining.from_pretrained(short).config.max_position_embeddings == 32
    # a learning rate too small to move the weights: what the second run ends with is its start
    assert main(tiny_run(corpus, long, "--init", str(short), "--lr", "1e-12")) == 0

    assert (long / "tokenizer.json").read_text() == (short / "tokenizer.json").read_text()
    assert (long / "vocab.txt").read_text() == (short / "vocab.txt").read_text()
    start, end = load_file(short / "model.safetensors"), load_file(long / "model.safetensors")
    assert start.keys() == end.keys()
    for name in start:
        torch.testing.assert_close(end[name], start[name], atol=1e-7, rtol=0)
    rows = [json.loads(line) for line in (long / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 3 and rows[0]["mlm_acc"] > 0  # the long pairs' held-out scores

    runs = json.loads((long / "made_by.json").read_text())
    assert [r["steps"] for r in runs] == [6, 6]
    assert runs[0]["command"].endswith(f"--out {short} --max-seq-len 16 --max-positions 32")
    assert f"--init {short}" in runs[1]["command"]
    card = (long / "README.md").read_text()
    assert f"`{runs[0]['command']}` (6 steps" in card and f"`{runs[1]['command']}`" in card
    assert "Steps: 12;" in card


def test_init_is_checked_before_anything_is_written(corpus, tmp_path, capsys):
    short = tmp_path / "short"
    assert main(tiny_run(corpus, short, "--max-seq-len", "16")) == 0
    capsys.readouterr()
    for extra, message in [
        (["--init", str(tmp_path / "nowhere")], "is not a finished `bertlab pretrain` run"),
        (["--init", str(short)], "exceeds the 16 positions"),
        (["--init", str(short), "--max-seq-len", "16", "--holdout", "work_b", "work_c"],
         "was trained on work_b, which this run holds out"),
        (["--init", str(short), "--max-positions", "64"], "with --init the model is PATH's"),
        (["--max-positions", "16"], "--max-positions 16 is less than --max-seq-len 32"),
    ]:
        assert main(tiny_run(corpus, tmp_path / "run", *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("bertlab: error: ") and message in err and err.count("\n") == 1
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--holdout", "Nope"], "no work titled 'Nope'"),
    (["--batch-size", "8", "--grad-accum", "3"], "divide evenly"),
    (["--max-seq-len", "3"], "max_seq_len must be at least 5"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--resume"], "nothing to resume"),
])
def test_bad_settings_are_one_line_errors(corpus, tmp_path, capsys, extra, message):
    assert main(tiny_run(corpus, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertlab: error: ") and message in err and err.count("\n") == 1


def test_a_used_directory_needs_resume_and_the_same_settings(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_run(corpus, run)) == 0
    capsys.readouterr()
    assert main(tiny_run(corpus, run)) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(tiny_run(corpus, run, "--resume", "--lr", "0.01")) == 2
    assert "these differ: --lr 0.01 (the run has None)" in capsys.readouterr().err


def test_unknown_preset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["pretrain", "--preset", "huge", "--out", "x"])
    assert exit.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_help_names_every_setting(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["pretrain", "--help"])
    assert exit.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--preset", "--corpus", "--steps", "--out", "--device", "--precision",
                 "--batch-size", "--grad-accum", "--lr", "--warmup", "--max-seq-len",
                 "--vocab-size", "--compile", "--resume", "--seed", "--dropout", "--eval-every",
                 "--holdout", "--checkpoint-every", "--init", "--max-positions"):
        assert flag in help_text


def test_a_play_contributes_its_spoken_lines_only():
    hamlet = next(d for d in load_corpus() if d.title == "Hamlet")
    lines = pretraining_text(hamlet).splitlines()
    speeches = [s for scene in hamlet.scenes for s in scene.speeches]
    assert lines[0] == speeches[0].lines[0]
    assert len(lines) == sum(len(s.lines) for s in speeches)
    assert not any(line.startswith(("Scene ", "Enter ")) for line in lines[:50])


@pytest.mark.parametrize("width, lr", [(64, 2e-3), (128, 2e-3), (256, 1e-3), (384, 1e-3),
                                       (768, 1e-4), (1024, 5e-5)])
def test_the_default_learning_rate_follows_the_model_width(width, lr):
    """A run from --init has no --preset: its width picks the preset's learning rate."""
    config = BertConfig(hidden_size=width, num_attention_heads=width // 64 or 1)
    assert pretrain.pretraining_lr(config) == lr


def test_pretrain_reads_the_corpus_a_work_at_a_time(tmp_path, monkeypatch):
    """However large the corpus, pretrain never holds its works: each pass (the held-out split,
    WordPiece training, the token store) reads them one by one and lets each go."""
    import gc
    import weakref

    from bertlab.data.corpus import Document
    lines = [line for work in load_corpus()[:8] for line in pretraining_text(work).splitlines()]
    alive, most, passes = set(), [0], []

    def documents(settings):
        passes.append(0)
        for n in range(60):
            gc.collect()
            work = Document(f"w{n}", None, "\n".join(lines[n * 20:(n + 1) * 20]))
            alive.add(id(work))
            weakref.finalize(work, alive.discard, id(work))
            most[0] = max(most[0], len(alive))
            yield work

    monkeypatch.setattr(pretrain.PretrainSettings, "documents", documents)
    assert main(["pretrain", "--holdout", "w3", "w4", "--steps", "2", "--batch-size", "8",
                 "--max-seq-len", "32", "--vocab-size", "300", "--dupe-factor", "1",
                 "--eval-every", "0", "--checkpoint-every", "0", "--out",
                 str(tmp_path / "run")]) == 0
    assert len(passes) == 3  # held-out split and fingerprint, WordPiece, the store
    assert most[0] <= 8  # the two held-out works and a few on their way through, of 60


def test_compile_with_cuda_graphs_trains_on_batches_of_one_shape(corpus, tmp_path, monkeypatch):
    """--compile reduce-overhead: one graph with no break, in the mode that captures CUDA
    graphs, on batches padded to --max-seq-len with a fixed number of MLM positions (the
    compiler itself is left out here: the options and the shapes are what is tested)."""
    options, shapes = [], set()
    monkeypatch.setattr(torch, "compile", lambda model, **kw: options.append(kw) or model)
    train = pretrain.train

    def watched(model, data, config, collate, **kwargs):
        def collate_and_look(rows):
            batch = collate(rows)
            shapes.add((batch["input_ids"].shape[1], batch["mlm_positions"].shape[1]))
            return batch

        return train(model, data, config, collate=collate_and_look, **kwargs)

    monkeypatch.setattr(pretrain, "train", watched)
    assert main(tiny_run(corpus, tmp_path / "run", "--compile", "reduce-overhead")) == 0
    assert options == [{"fullgraph": True, "mode": "reduce-overhead"}]
    assert shapes == {(32, 5)}  # 32 tokens, round(0.15 x 32) = 5 predictions, every batch
    saved = json.loads((tmp_path / "run" / "pretrain_args.json").read_text())
    assert saved["compile"] == "reduce-overhead"
