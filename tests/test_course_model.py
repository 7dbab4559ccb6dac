"""The checkpoint the course ships (models/bertlab-tiny-shakespeare): small, complete, and as good
on the held-out works as its model card and training log say."""

import json
import re

import pytest
import torch

import bertlab
from bertlab import pretrain
from bertlab.data.corpus import load_corpus
from bertlab.data.tasks import TEST
from bertlab.metrics import pretraining_metrics
from bertlab.tokenization import load_tokenizer
from bertlab.training import TrainConfig, Trainer

PATH = bertlab.course_model_path()
ARGS = json.loads((PATH / "pretrain_args.json").read_text(encoding="utf-8"))
LOG = [json.loads(line) for line in (PATH / "metrics.jsonl").read_text().splitlines()]
FINAL = [row for row in LOG if row["split"] == "eval"][-1]
MADE_BY = json.loads((PATH / "made_by.json").read_text(encoding="utf-8"))  # every run, in order


def test_the_checkpoint_is_complete_and_small():
    names = {p.name for p in PATH.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "metrics.jsonl",
            "pretrain_args.json", "made_by.json", "README.md", "curves.png"} <= names
    if len(MADE_BY) > 1:  # the log of the run it started from, for chapter 7
        assert "first-run-metrics.jsonl" in names
    assert sum(p.stat().st_size for p in PATH.iterdir()) < 10 * 2**20


def test_it_was_pretrained_without_the_fine_tuning_test_plays():
    held_out = ARGS["holdout"] if ARGS["holdout"] is not None else list(pretrain.HOLDOUT)
    assert set(held_out) >= set(TEST)
    assert FINAL["step"] == ARGS["steps"] == MADE_BY[-1]["steps"]
    for run in MADE_BY:  # nor did the runs it started from: they held out the default plays
        assert run["command"].startswith("bertlab pretrain ")
        assert "--holdout" not in run["command"] and "--corpus" not in run["command"]


@pytest.fixture(scope="module")
def held_out_scores():
    """Evaluate the shipped model on the held-out set rebuilt as `bertlab pretrain` built it."""
    tokenizer = load_tokenizer(PATH)
    _, held_out = pretrain.split_holdout(load_corpus(), list(pretrain.HOLDOUT))
    data = pretrain.held_out_examples(held_out, tokenizer,
                                      pretrain.PretrainSettings.of_run(PATH))
    model = bertlab.BertForPreTraining.from_pretrained(PATH)
    config = TrainConfig(batch_size=ARGS["batch_size"], device="cpu", precision="fp32")
    trainer = Trainer(model, config, 0, 1, torch.device("cpu"), data.collate, pretraining_metrics)
    return trainer.evaluate(data, data.collate)


def test_the_held_out_figures_of_its_log_reproduce(held_out_scores):
    for name in ("mlm_acc", "nsp_acc"):
        assert held_out_scores[name] == pytest.approx(FINAL[name], abs=2e-3), name
    assert held_out_scores["loss"] == pytest.approx(FINAL["loss"], rel=1e-3)


def test_the_model_card_reports_the_final_figures():
    card = (PATH / "README.md").read_text(encoding="utf-8")
    row = f"| {FINAL['step']} | {FINAL['mlm_acc']:.1%} | {FINAL['nsp_acc']:.1%} |"
    assert row in card
    assert re.search(r"Command: `bertlab pretrain [^`]*`", card)
    assert "wall time" in card and "hardware" in card
    assert card.count("[MASK]") >= 5  # fill-in-the-blank examples
