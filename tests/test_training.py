"""The training loop: schedule, optimizer groups, precision, logging, exact resume, crash safety,
divergence, DDP. Tiny models on synthetic batches, so each test takes seconds.

Run as a script, this file is the worker of the subprocess tests:
    python tests/test_training.py kill-during-checkpoint OUT_DIR
    python -m torch.distributed.run --nproc_per_node=2 tests/test_training.py ddp OUT_DIR
"""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from bertlab import BertConfig, BertForPreTraining, BertForSequenceClassification
from bertlab.metrics import pretraining_metrics
from bertlab.training import (
    TrainConfig,
    checkpoints,
    lr_at,
    make_optimizer,
    read_metrics,
    resolve_precision,
    train,
)

V, T = 48, 16  # vocabulary, sequence length
MASK = 1  # id 0 is padding
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny(dropout=0.0) -> BertConfig:
    return BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=T, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


def pretraining_model(dropout=0.0) -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(tiny(dropout))


def synthetic_examples(n: int, seed: int = 0) -> list[dict]:
    """Sequences counting up from a random start, 1-6 of their tokens hidden (so micro-batches
    and processes hold different numbers of MLM labels); NSP label = parity of the start. Rows
    have 0-3 padding tokens."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        start = int(torch.randint(V, (1,), generator=g))
        length = T - int(torch.randint(4, (1,), generator=g))
        ids = 2 + (start + torch.arange(T)) % (V - 2)  # (T,)
        ids[length:] = 0
        masked = 1 + int(torch.randint(6, (1,), generator=g))
        hidden = torch.randperm(length - 1, generator=g)[:masked] + 1
        labels = torch.full((T,), -100)
        labels[hidden] = ids[hidden]
        ids[hidden] = MASK
        examples.append(dict(input_ids=ids, token_type_ids=(torch.arange(T) >= T // 2).long(),
                             attention_mask=(torch.arange(T) < length).long(), mlm_labels=labels,
                             nsp_labels=torch.tensor(start % 2)))
    return examples


def noisy_collate(examples: list[dict]) -> dict:
    """default_collate, then one input token replaced at random, drawing on Python's and NumPy's
    generators: a resumed run only matches if their states were restored too."""
    batch = default_collate(examples)
    row, col = random.randrange(len(examples)), np.random.randint(1, T // 2)
    batch["input_ids"][row, col] = int(torch.randint(2, V, (1,)))
    return batch


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(steps=8, batch_size=8, lr=3e-3, warmup=2, log_every=1,
                                 device="cpu", precision="fp32"), **overrides})


def parameters(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict, atol: float = 0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


DATA = synthetic_examples(64)
HELD_OUT = synthetic_examples(12, seed=1)


def test_lr_warms_up_linearly_then_decays_to_zero():
    lrs = [lr_at(step, 1.0, warmup_steps=4, total_steps=10) for step in range(10)]
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[4:] == pytest.approx([6 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert TrainConfig(steps=200, warmup=0.05).warmup_steps == 10
    assert TrainConfig(steps=200, warmup=30).warmup_steps == 30


@pytest.mark.parametrize("bad, message", [
    (dict(precision="fp8"), "precision"),
    (dict(steps=0), "steps"),
    (dict(warmup=2.5), "warmup"),
    (dict(lr=0.0), "lr"),
    (dict(checkpoint_every=10), "out_dir"),
    (dict(workers=-1), "workers"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_weight_decay_spares_biases_and_layernorm():
    model = pretraining_model()
    decayed, spared = make_optimizer(model, lr=1e-3, weight_decay=0.01).param_groups
    assert decayed["weight_decay"] == 0.01 and spared["weight_decay"] == 0.0
    names = {id(p): name for name, p in model.named_parameters()}
    spared_names = {names[id(p)] for p in spared["params"]}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert spared_names == {n for n in names.values() if n.endswith("bias") or "LayerNorm" in n}
    assert "bert.embeddings.word_embeddings.weight" in decayed_names
    assert "bert.encoder.layer.0.attention.self.query.weight" in decayed_names
    assert len(spared_names) + len(decayed_names) == len(list(model.parameters()))


def test_training_learns_logs_and_saves(tmp_path):
    model = pretraining_model()
    settings = dict(steps=40, lr=1e-2, log_every=5, eval_every=20, out_dir=tmp_path)
    history = train(model, DATA, config(**settings), eval_data=HELD_OUT,
                    metrics=pretraining_metrics)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    assert [r["step"] for r in rows if r["split"] == "eval"] == [20, 40]
    for r in train_rows:
        assert r.keys() == {"step", "split", "loss", "mlm_acc", "nsp_acc", "lr", "tokens_per_s"}
        assert r["tokens_per_s"] > 0
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.8
    assert train_rows[-1]["mlm_acc"] > train_rows[0]["mlm_acc"]
    assert train_rows[-1]["lr"] == pytest.approx(1e-2 / (40 - 2))  # decayed to the last step

    columns = read_metrics(tmp_path)
    assert columns["train"]["loss"] == [r["loss"] for r in train_rows]
    assert columns["eval"]["step"] == [20, 40]
    reloaded = BertForPreTraining.from_pretrained(tmp_path)  # the final model, Hugging Face layout
    assert_same(parameters(reloaded), parameters(model))


def test_evaluation_matches_a_direct_forward_pass():
    model = pretraining_model()
    history = train(model, DATA, config(steps=2, batch_size=4), eval_data=HELD_OUT[:4])
    model.eval()
    with torch.no_grad():
        expected = model(**default_collate(HELD_OUT[:4])).loss.item()
    assert history[-1]["split"] == "eval"
    assert history[-1]["loss"] == pytest.approx(expected, rel=1e-5)


def test_same_seed_same_run_other_seed_other_run():
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        model = pretraining_model(dropout=0.1)
        train(model, DATA, config(steps=4, seed=seed), collate=noisy_collate)
        runs[name] = parameters(model)
    assert_same(runs["a"], runs["b"])
    key = "bert.pooler.dense.weight"
    assert not torch.equal(runs["a"][key], runs["c"][key])


def test_evaluating_does_not_change_the_training_run():
    plain, evaluated = pretraining_model(dropout=0.1), pretraining_model(dropout=0.1)
    train(plain, DATA, config(steps=4), collate=noisy_collate)
    train(evaluated, DATA, config(steps=4, eval_every=1), collate=noisy_collate,
          eval_data=HELD_OUT)
    assert_same(parameters(plain), parameters(evaluated))


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch, precision):
    settings = dict(steps=8, grad_accum=2, checkpoint_every=4, precision=precision)
    whole = pretraining_model(dropout=0.1)
    train(whole, DATA, config(**settings, out_dir=tmp_path / "whole"), collate=noisy_collate)

    from bertlab.training import Trainer
    update = Trainer.update

    def dies_at_step_6(self, *args):  # after checkpoint-4 and the log rows of step 5
        if self.step == 5:
            raise Interrupted
        return update(self, *args)

    monkeypatch.setattr(Trainer, "update", dies_at_step_6)
    run = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        train(pretraining_model(dropout=0.1), DATA, config(**settings, out_dir=run),
              collate=noisy_collate)
    monkeypatch.setattr(Trainer, "update", update)
    assert [p.name for p in checkpoints(run)] == ["checkpoint-4"]

    resumed = pretraining_model(dropout=0.1)  # fresh weights: the checkpoint must replace them
    train(resumed, DATA, config(**settings, out_dir=run, resume=True), collate=noisy_collate)
    assert_same(parameters(resumed), parameters(whole))
    steps = read_metrics(run)["train"]["step"]
    assert steps == list(range(1, 9))  # step 5, logged before the crash, is logged once
    state = torch.load(run / "checkpoint-8" / "training_state.pt", weights_only=True)
    assert bool(state["scaler"]) == (precision == "fp16")


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, __file__, "kill-during-checkpoint", str(run)],
                            env={**ENV, "OMP_NUM_THREADS": str(torch.get_num_threads())},
                            capture_output=True, text=True, timeout=600)  # threads as here: the
    # resumed run is compared bit for bit with one made here
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in checkpoints(run)] == ["checkpoint-2"]
    assert sorted(p.name for p in (run / ".tmp-checkpoint-4").iterdir()) == [
        "config.json", "model.safetensors"]  # killed before training_state.pt
    previous = BertForPreTraining.from_pretrained(run / "checkpoint-2")
    state = torch.load(run / "checkpoint-2" / "training_state.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(p).all() for p in previous.parameters())

    resumed = pretraining_model()
    train(resumed, DATA, config(steps=6, checkpoint_every=2, out_dir=run, resume=True))
    whole = pretraining_model()
    train(whole, DATA, config(steps=6))
    assert_same(parameters(resumed), parameters(whole))
    assert not (run / ".tmp-checkpoint-4").exists()
    assert [p.name for p in checkpoints(run)] == ["checkpoint-6"]


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    """Written to a private temporary file then renamed, they must not stay private (0600)."""
    old = os.umask(0o022)
    try:
        train(pretraining_model(), DATA, config(steps=2, checkpoint_every=2, out_dir=tmp_path))
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json", "checkpoint-2/training_state.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def kill_during_second_checkpoint(out_dir: str):
    """Train with a checkpoint every 2 steps; die by SIGKILL inside the second checkpoint's write,
    after the model files and before training_state.pt."""
    save = torch.save
    calls = []

    def save_or_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        save(*args, **kwargs)

    torch.save = save_or_die
    train(pretraining_model(), DATA, config(steps=6, checkpoint_every=2, out_dir=out_dir))


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    model = pretraining_model()
    calls = []

    def nan_on_fifth_update(module, args, output):
        calls.append(1)
        if len(calls) == 5:
            output.mlm_loss = output.mlm_loss * float("nan")  # the loss the update weighs
        return output

    model.register_forward_hook(nan_on_fifth_update)
    with pytest.raises(FloatingPointError, match=r"step 5\b.*checkpoint-4"):
        train(model, DATA, config(checkpoint_every=2, out_dir=tmp_path))
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-4"]
    good = BertForPreTraining.from_pretrained(tmp_path / "checkpoint-4")
    assert all(torch.isfinite(p).all() for p in good.parameters())


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_precision_runs_the_model_in_that_dtype(precision, dtype):
    seen = []

    def logits_dtype(batch, output):
        seen.append(output.mlm_logits.dtype)
        return {}

    model = pretraining_model()
    history = train(model, DATA, config(steps=20, lr=1e-2, precision=precision),
                    metrics=logits_dtype)
    assert seen == [dtype] * 20
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    losses = [r["loss"] for r in history]  # batches of 8: noisy, so three steps' means
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1


def test_auto_precision_on_cpu_is_fp32():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("mode", [True, "reduce-overhead"])  # CUDA graphs on a GPU only
def test_compiled_model_trains_like_the_eager_one(tmp_path, mode):
    eager, compiled = pretraining_model(), pretraining_model()
    train(eager, DATA, config(steps=3))
    train(compiled, DATA, config(steps=3, compile=mode, grad_accum=2, out_dir=tmp_path))
    assert_same(parameters(compiled), parameters(eager), atol=1e-4)
    assert BertForPreTraining.from_pretrained(tmp_path).state_dict().keys() == \
        eager.state_dict().keys()  # saved without torch.compile's `_orig_mod.` prefix


def test_the_same_loop_fine_tunes_a_classifier():
    examples = [dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                     labels=x["nsp_labels"]) for x in DATA]  # label: parity of the first token

    def accuracy(batch, output):
        return {"acc": (output.logits.argmax(-1) == batch["labels"]).float().mean()}

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny())
    history = train(model, examples, config(steps=60, log_every=20, lr=1e-2),
                    eval_data=examples[:32], metrics=accuracy)
    assert history[-1]["split"] == "eval" and history[-1]["acc"] > 0.9


@pytest.mark.parametrize("settings, data, message", [
    (dict(batch_size=8, grad_accum=3), DATA, "divide evenly"),
    (dict(batch_size=8), DATA[:5], "fewer than one batch"),
])
def test_bad_runs_are_refused_with_a_clear_error(settings, data, message):
    with pytest.raises(ValueError, match=message):
        train(pretraining_model(), data, config(**settings))


def test_a_used_run_directory_needs_resume_and_resume_needs_a_checkpoint(tmp_path):
    train(pretraining_model(), DATA, config(steps=2, out_dir=tmp_path))
    with pytest.raises(ValueError, match="already holds a run"):
        train(pretraining_model(), DATA, config(steps=2, out_dir=tmp_path))
    with pytest.raises(ValueError, match="no checkpoint"):
        train(pretraining_model(), DATA, config(steps=2, out_dir=tmp_path, resume=True))


def test_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo), each half of every batch, ends where 1 process does."""
    run = tmp_path / "ddp"
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", __file__, "ddp", str(run)],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = pretraining_model()
    history = train(single, DATA, ddp_config(run=None))
    assert_same(parameters(BertForPreTraining.from_pretrained(run)), parameters(single),
                atol=1e-5)
    logged = read_metrics(run)["train"]
    assert logged["step"] == [r["step"] for r in history]  # one writer: no duplicate rows
    assert logged["loss"] == pytest.approx([r["loss"] for r in history], rel=1e-4)
    assert [p.name for p in checkpoints(run)] == ["checkpoint-6"]


def test_accumulated_micro_batches_give_the_whole_batch_gradient(monkeypatch):
    """MLM is a mean over masked tokens, NSP over pairs: with micro-batches holding different
    numbers of masked tokens, the update's gradient and loss are still the whole batch's."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def record(parameters, *args, **kwargs):
        parameters = list(parameters)
        seen.append([p.grad.clone() for p in parameters])
        return clip(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record)
    counts = [int((x["mlm_labels"] != -100).sum()) for x in DATA[:8]]
    assert len(set(counts)) > 2  # the micro-batches below hold unequal numbers of them
    runs = {k: train(pretraining_model(), DATA, config(steps=1, grad_accum=k)) for k in (1, 2, 8)}
    whole, *split = seen
    for grads in split:
        for a, b in zip(whole, grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert runs[2][0]["loss"] == pytest.approx(runs[1][0]["loss"], rel=1e-6)
    assert runs[8][0]["loss"] == pytest.approx(runs[1][0]["loss"], rel=1e-6)


def test_dataloader_workers_make_the_run_the_main_process_makes():
    """Batches made ahead in two worker processes, dynamic masks and all, are the ones the
    training process would have made: the same weights at the end."""
    from bertlab.data.pretraining import pretraining_examples
    from bertlab.tokenization import train_wordpiece

    words = "the king queen castle night sword ghost honour thou art crown speak swear".split()
    rng = random.Random(0)
    texts = ["\n".join(" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(30))
             for _ in range(4)]
    tokenizer = train_wordpiece(texts, vocab_size=120)
    data = pretraining_examples(texts, tokenizer, max_seq_len=T, dupe_factor=2,
                                dynamic_masking=True, fixed_positions=True)
    trained = []
    for workers in (0, 2):
        torch.manual_seed(0)
        shape = tiny(dropout=0.1)
        shape.vocab_size = tokenizer.get_vocab_size()
        model = BertForPreTraining(shape)
        train(model, data, config(steps=6, grad_accum=2, workers=workers), collate=data.collate)
        trained.append(parameters(model))
    assert_same(*trained)


def test_gradient_checkpointing_trains_to_the_same_weights():
    plain, recomputed = pretraining_model(), pretraining_model()
    train(plain, DATA, config(steps=3))
    train(recomputed, DATA, config(steps=3, gradient_checkpointing=True))
    assert recomputed.bert.encoder.checkpointing
    assert_same(parameters(plain), parameters(recomputed), atol=1e-6)


def test_tf32_is_asked_for_while_training_on_cuda_only_and_put_back(monkeypatch):
    from bertlab import training

    seen = []
    monkeypatch.setattr(training.Trainer, "fit", lambda self, *a: seen.append(
        torch.get_float32_matmul_precision()) or [])
    before = torch.get_float32_matmul_precision()
    train(pretraining_model(), DATA, config(steps=1))
    cuda = training.Process(0, 1, torch.device("cuda"))
    monkeypatch.setattr(training.Trainer, "__init__", lambda self, *a: None)
    train(pretraining_model(), DATA, config(steps=1), process=cuda)
    train(pretraining_model(), DATA, config(steps=1, tf32=False), process=cuda)
    assert seen == [before, "high", before] and torch.get_float32_matmul_precision() == before


def ddp_config(run) -> TrainConfig:
    return config(steps=6, batch_size=8, log_every=2, checkpoint_every=6 if run else 0,
                  out_dir=run)


if __name__ == "__main__":
    mode, out = sys.argv[1:]
    if mode == "kill-during-checkpoint":
        kill_during_second_checkpoint(out)
    elif mode == "ddp":
        train(pretraining_model(), DATA, ddp_config(out))
