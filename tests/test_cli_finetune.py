"""`bertlab finetune`: each task end to end on a tiny model, init from a checkpoint or scratch,
resume, and one-line errors for bad arguments."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_checkpoint
from safetensors.torch import load_file

import bertlab.finetune as recipe
from bertlab import cli
from bertlab.data import load_corpus
from bertlab.finetune import TASKS

BERTLAB = Path(sys.executable).parent / "bertlab"  # the installed console script
EVAL_EXAMPLES = 48  # dev and test are cut to about this many, to keep the runs to seconds


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """A tiny pretrained-shaped checkpoint with its tokenizer: 1 layer, 32 wide, 128 positions."""
    lines = (line for d in load_corpus() if d.scenes for s in d.scenes for sp in s.speeches
             for line in sp.lines)
    return tiny_checkpoint(tmp_path_factory.mktemp("init"), lines, 1500, 128)


@pytest.fixture(autouse=True)
def small_eval(monkeypatch):
    """Dev and test cut to every n-th example, about EVAL_EXAMPLES; training sets untouched."""
    load_task = recipe.load_task

    def small(name, split):
        examples = load_task(name, split)
        return examples if split == "train" else examples[::len(examples) // EVAL_EXAMPLES]

    monkeypatch.setattr(recipe, "load_task", small)


def finetune(task: str, out: Path, *extra: str) -> int:
    return cli.main(["finetune", "--task", task, "--train-size", "64", "--batch-size", "16",
                     "--min-steps", "20", "--epochs", "1", "--max-seq-len", "128", "--lr", "3e-3",
                     "--checkpoint-every", "10", "--out", str(out), *extra])


@pytest.mark.parametrize("task", list(TASKS))
def test_finetune_learns_and_scores_dev_and_test(task, init, tmp_path, capsys):
    assert finetune(task, tmp_path / "run", "--init", str(init)) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    metric = TASKS[task].metric
    assert results["task"] == task and results["metric"] == metric
    assert results["train_size"] == 64 and results["steps"] == 20 and results["lr"] == 3e-3
    for split in ("dev", "test"):
        assert 0.0 <= results[split][metric] <= 1.0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert losses[1] < losses[0]  # 64 examples, seen 5 times: the loss falls
    assert {"config.json", "model.safetensors", "tokenizer.json", "finetune_args.json",
            "checkpoint-20"} <= {p.name for p in run.iterdir()}
    assert f"test {metric}" in capsys.readouterr().out


def test_init_loads_the_checkpoint_and_scratch_does_not(init, tmp_path):
    assert finetune("genre", tmp_path / "loaded", "--init", str(init)) == 0
    assert finetune("genre", tmp_path / "fresh", "--init", "scratch",
                    "--config-from", str(init)) == 0
    key = "bert.embeddings.word_embeddings.weight"
    start = load_file(init / "model.safetensors")[key][4]  # [MASK]: never in a fine-tuning input
    loaded = load_file(tmp_path / "loaded" / "model.safetensors")[key][4]
    fresh = load_file(tmp_path / "fresh" / "model.safetensors")[key][4]
    assert torch.allclose(loaded, start, rtol=1e-3, atol=1e-6)  # only weight decay touched it
    assert not torch.allclose(fresh, start, atol=1e-2)
    assert json.loads((tmp_path / "fresh" / "results.json").read_text())["init"] == "scratch"


def test_resume_finishes_the_run_with_the_same_scores(init, tmp_path):
    run = tmp_path / "run"
    assert finetune("names", run, "--init", str(init)) == 0
    first = json.loads((run / "results.json").read_text())
    assert finetune("names", run, "--init", str(init), "--resume") == 0
    again = json.loads((run / "results.json").read_text())
    assert (again["dev"], again["test"]) == (first["dev"], first["test"])
    assert finetune("names", run, "--init", str(init), "--resume", "--seed", "1") == 2


def test_compile_trains_on_batches_of_one_width(init, tmp_path, monkeypatch):
    """--compile pads every training batch to --max-seq-len: one shape, not a recompile per
    longest row (the compiler itself is left out here: the shapes are what is tested)."""
    widths = []
    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    train = recipe.train

    def watched(model, data, config, collate, **kwargs):
        def collate_and_look(rows):
            batch = collate(rows)
            widths.append(batch["input_ids"].shape[-1])
            return batch

        assert config.compile
        return train(model, data, config, collate=collate_and_look, **kwargs)

    monkeypatch.setattr(recipe, "train", watched)
    assert finetune("genre", tmp_path / "run", "--init", str(init), "--compile") == 0
    assert len(widths) >= 20 and set(widths) == {128}


@pytest.mark.parametrize("extra,message", [
    (["--init", "nowhere"], "--init nowhere is not a checkpoint directory"),
    (["--init", "INIT", "--train-size", "0"], "--train-size must be from 1 to"),
    (["--init", "INIT", "--max-seq-len", "256"], "exceeds the model's 128 positions"),
    (["--init", "minilm", "--config-from", "INIT"], "--config-from goes with --init scratch"),
    (["--init", "scratch"], "pass --config-from DIR"),
    (["--init", "INIT", "--out", "NONEMPTY"], "is not empty"),
    (["--init", "INIT", "--dropout", "1"], "--dropout must be in [0, 1)"),
])
def test_bad_arguments_are_one_line_errors(init, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(recipe, "COURSE_MODEL", tmp_path / "not-made-yet")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    swap = {"INIT": str(init), "NONEMPTY": str(tmp_path / "full")}
    assert finetune("genre", tmp_path / "run", *(swap.get(a, a) for a in extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertlab: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()  # a refused run leaves nothing behind


def test_help_from_the_console_script():
    done = subprocess.run([BERTLAB, "finetune", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert all(word in done.stdout for word in ("who_said", "--init", "minilm", "scratch",
                                                 "--min-steps", "5e-4"))


def test_unknown_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["finetune", "--task", "sentiment", "--out", "x"])
    assert exit.value.code == 2 and "invalid choice: 'sentiment'" in capsys.readouterr().err
