"""benchmarks/finetune_experiment.py's report, on a hand-made cache: which runs make the table
(the learning rate chosen on dev, the baseline, no duplicates) and what the table says."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_experiment.py"
spec = importlib.util.spec_from_file_location("finetune_experiment", SCRIPT)
experiment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(experiment)

ARGV = ["--tasks", "genre", "--starts", "ours", "scratch", "--sizes", "100", "300",
        "--seeds", "0", "1", "--lr-size", "100"]
DEV = {"ours": {2e-4: 0.40, 5e-4: 0.45, 1e-3: 0.41},  # dev accuracy of the lr search's runs
       "scratch": {2e-4: 0.38, 5e-4: 0.36, 1e-3: 0.30}}


def run(start, size, seed, lr, test):
    key = {"task": "genre", "start": start, "size": size, "seed": seed, "lr": lr,
           **experiment.settings(experiment.parse_args(ARGV), start)}
    return {"key": key, "train_size": int(size), "dev": {"accuracy": DEV[start][lr]},
            "test": {"accuracy": test}, "wall_seconds": 10.0}


def cache_rows() -> list[dict]:
    rows = [run(start, "100", 0, lr, 0.3) for start in DEV for lr in DEV[start]]  # the lr search
    rows[1]["test"]["accuracy"] = 0.50  # ours at 5e-4, size 100, seed 0: the chosen lr's run
    rows += [run("ours", "100", 1, 5e-4, 0.40), run("ours", "300", 0, 5e-4, 0.60),
             run("ours", "300", 1, 5e-4, 0.70), run("ours", "300", 1, 1e-3, 0.99),  # not chosen
             run("scratch", "100", 1, 2e-4, 0.20), run("scratch", "300", 0, 2e-4, 0.35)]
    rows.append(dict(rows[-1], test={"accuracy": 0.0}))  # a repeat of a key: the first counts
    rows += [{"key": {"task": "genre", "start": "naive_bayes", "size": size, "seed": seed},
              "train_size": int(size), "test": {"accuracy": 0.38}}
             for size in ("100", "300") for seed in (0, 1)]
    return rows


def write_report(folder: Path, rows: list[dict]) -> str:
    (folder / experiment.CACHE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    experiment.main([*ARGV, "--report", "--dir", str(folder)])
    return (folder / "RESULTS.md").read_text()


@pytest.fixture
def report(tmp_path):
    write_report(tmp_path, cache_rows())
    return tmp_path


def test_the_table_uses_each_starts_learning_rate_chosen_on_dev(report):
    table = (report / "RESULTS.md").read_text()
    assert "| genre (accuracy) | ours | 0.0005 | 45.0 ± 7.1 | 65.0 ± 7.1 |" in table
    assert ("| genre (accuracy) | scratch | 0.0002 | 25.0 ± 7.1 | 35.0 ± 0.0 (1 of 2 seeds) |"
            in table)
    assert "| genre (accuracy) | naive_bayes | — | 38.0 ± 0.0 | 38.0 ± 0.0 |" in table
    assert (report / experiment.PLOT).stat().st_size > 0


def test_the_summary_has_one_flat_row_per_run_in_the_table(report):
    summary = json.loads((report / experiment.SUMMARY).read_text())
    assert summary["command"].startswith("`python benchmarks/finetune_experiment.py")
    ours = sorted((r["examples"], r["seed"], r["accuracy"]) for r in summary["rows"]
                  if r["start"] == "ours")
    assert ours == [(100, 0, 0.5), (100, 1, 0.4), (300, 0, 0.6), (300, 1, 0.7)]
    assert len(summary["rows"]) == 4 + 3 + 4  # ours, scratch (one seed missing), naive Bayes



def test_a_start_whose_learning_rate_search_is_unfinished_is_not_in_the_table(tmp_path):
    rows = [r for r in cache_rows() if not (r["key"]["start"] == "scratch"
                                            and r["key"]["seed"] == 0 and r["key"]["lr"] == 1e-3)]
    table = write_report(tmp_path, rows)
    assert "| genre (accuracy) | ours | 0.0005 |" in table
    assert "| scratch |" not in table


def test_a_reshipped_checkpoint_is_run_again(tmp_path):
    """Runs are keyed by the files each start reads: new weights in the same place invalidate
    `ours`, not `scratch` (same shape and tokenizer); `minilm` does not read the checkpoint."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(experiment.COURSE_MODEL, checkpoint)
    args = experiment.parse_args([*ARGV, "--checkpoint", str(checkpoint)])
    before = {start: experiment.settings(args, start) for start in experiment.STARTS}
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"?")
    experiment.fingerprint.cache_clear()
    after = {start: experiment.settings(args, start) for start in experiment.STARTS}
    assert before["ours"]["checkpoint"] == after["ours"]["checkpoint"] == str(checkpoint)
    assert before["ours"]["checkpoint_sha256"] != after["ours"]["checkpoint_sha256"]
    assert before["scratch"] == after["scratch"]
    assert before["minilm"] == after["minilm"] and "checkpoint" not in after["minilm"]


def test_a_checkpoint_without_the_files_a_start_reads_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit):
        experiment.parse_args([*ARGV, "--checkpoint", str(tmp_path)])
    assert f"--checkpoint {tmp_path} has no model.safetensors, tokenizer.json" in (
        capsys.readouterr().err)
    assert experiment.parse_args(["--starts", "minilm", "--checkpoint", str(tmp_path)])
