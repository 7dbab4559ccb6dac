"""Several processes without torchrun's agent (a process group set up by hand, as a cluster's
launcher does): a bad setting stops every rank with the same message, at once; a good run ends;
resuming at another world size carries on. CPU, gloo, two processes."""

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_corpus

from bertlab.training import checkpoints, read_metrics, train

sys.path.insert(0, str(Path(__file__).parent))
from test_training import DATA, ddp_config, pretraining_model  # noqa: E402

HERE = Path(__file__).parent
TIMEOUT = 240  # seconds a test waits for its processes: far below the collective timeout (600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return small_corpus(tmp_path_factory.mktemp("corpus"), works=3, lines=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain(corpus: Path, out: Path, world: int, *extra: str) -> list[subprocess.CompletedProcess]:
    """`bertlab pretrain` in `world` processes that join one group through the environment."""
    port, procs = free_port(), []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world), "BERTLAB_DIST_TIMEOUT": "120"}
        argv = [sys.executable, "-m", "bertlab.cli", "pretrain", "--corpus", str(corpus),
                "--holdout", "work_c", "--steps", "4", "--batch-size", "8", "--max-seq-len", "32",
                "--vocab-size", "300", "--dupe-factor", "1", "--eval-every", "2",
                "--checkpoint-every", "2", "--device", "cpu", "--out", str(out), *extra]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    done = []
    for proc in procs:
        try:
            out_text, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a rank hung: a bad setting must stop every rank")
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err))
    return done


def test_a_bad_setting_stops_every_rank_with_the_same_message(corpus, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    ranks = pretrain(corpus, tmp_path / "used", 2)
    assert [r.returncode for r in ranks] == [2, 2]
    for r in ranks:
        assert "bertlab: error: " in r.stderr and "is not empty" in r.stderr


def test_two_ranks_train_without_an_agent_and_one_process_resumes_them(tmp_path):
    """tests/test_training.py's DDP worker (6 steps, a checkpoint at 6) in two processes started
    by hand; then one process carries the run on to 8 steps from that checkpoint."""
    run, port, procs = tmp_path / "run", free_port(), []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "test_training.py"), "ddp",
                                       str(run)], env=env, stderr=subprocess.PIPE, text=True))
    errors = [proc.communicate(timeout=TIMEOUT)[1] for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:]
    assert [c.name for c in checkpoints(run)] == ["checkpoint-6"]
    with pytest.warns(UserWarning, match="written by 2 processes and this run has 1"):
        history = train(pretraining_model(), DATA,
                        dataclasses.replace(ddp_config(run), steps=8, resume=True))
    assert [r["step"] for r in history if r["split"] == "train"] == [8]
    assert read_metrics(run)["train"]["step"] == [2, 4, 6, 8]
