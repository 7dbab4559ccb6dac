"""What would make a GPU wait, counted on the CPU: reads of device values inside a training step,
and the graphs torch.compile makes. Fixed MLM positions give the same loss as the labels do."""

import contextlib
import functools
import random
from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.data import default_collate

import bertlab.model
from bertlab import BertConfig, BertForPreTraining, BertForSequenceClassification, training
from bertlab.config import IGNORE_INDEX
from bertlab.data.pretraining import PretrainingCollator
from bertlab.metrics import class_accuracy, pretraining_metrics

V, T, P = 48, 16, 4  # vocabulary, sequence length, predictions per row
READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}


def tiny() -> BertConfig:
    return BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=T, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def examples(n: int, seed: int = 0) -> list[dict]:
    """Rows with 1 to P masked tokens (a different count in every batch) and some padding."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randrange(T - 4, T + 1)
        ids = torch.tensor([rng.randrange(2, V) for _ in range(T)])
        ids[length:] = 0
        labels = torch.full((T,), IGNORE_INDEX)
        for i in rng.sample(range(1, length), rng.randint(1, P)):
            labels[i] = ids[i]
        rows.append(dict(input_ids=ids, attention_mask=(torch.arange(T) < length).long(),
                         mlm_labels=labels, nsp_labels=torch.tensor(rng.randrange(2)),
                         labels=torch.tensor(rng.randrange(2))))
    return rows


def with_positions(rows: list[dict]) -> dict:
    """default_collate, plus BERT's masked_lm_positions as bertlab's collator makes them."""
    batch = default_collate(rows)
    positions = PretrainingCollator(0, max_predictions=P).positions(batch["mlm_labels"].numpy())
    batch["mlm_positions"] = torch.from_numpy(positions)
    return {k: v for k, v in batch.items() if k != "labels"}


def without_positions(rows):
    return {k: v for k, v in with_positions(rows).items() if k != "mlm_positions"}


def test_fixed_positions_give_the_labels_loss_and_accuracy():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny()).eval()
    rows = examples(8)
    fixed, found = with_positions(rows), without_positions(rows)
    a, b = model(**fixed), model(**found)
    assert a.mlm_logits.shape == (8, P, V) and b.mlm_logits.shape[0] == sum(
        int((r["mlm_labels"] != IGNORE_INDEX).sum()) for r in rows)
    torch.testing.assert_close(a.loss, b.loss)
    targets = fixed["mlm_labels"].gather(1, fixed["mlm_positions"])  # (B, P)
    guesses = torch.where(torch.rand(targets.shape) < 0.5, targets.clamp(min=0), 0)  # half right
    logits = torch.nn.functional.one_hot(guesses, V).float()  # (B, P, V)
    nsp = torch.zeros(8, 2)
    scored = targets != IGNORE_INDEX
    fixed_acc = pretraining_metrics(fixed, SimpleNamespace(mlm_logits=logits, nsp_logits=nsp))
    found_acc = pretraining_metrics(found, SimpleNamespace(mlm_logits=logits[scored],
                                                           nsp_logits=nsp))
    assert 0.2 < fixed_acc["mlm_acc"].item() < 0.8
    torch.testing.assert_close(fixed_acc, found_acc)


class Reads(TorchDispatchMode):
    """Counts the operations that copy a device value to the host (item, bool, nonzero ...)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += str(func) in READS
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def as_on_an_accelerator(monkeypatch):
    """Run as on a GPU: the model cannot read its inputs' values (bertlab.model.on_host is
    False there), while the loop's work on the CPU batch before it moves (its checks, its token
    and label counts; the loader's seed, drawn once) reads host memory and waits for nothing,
    so it is not counted."""
    monkeypatch.setattr(bertlab.model, "on_host", lambda t: False)
    for owner, name in ((training, "count_tokens"), (training.Trainer, "to_device"),
                        (training.Trainer, "loss_weights"), (training.Trainer, "loader")):
        original = getattr(owner, name)

        def uncounted(*args, _original=original, **kwargs):
            with _disable_current_modes():
                return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, uncounted)
    yield


@pytest.mark.parametrize("kind", ["pretraining", "classification"])
def test_a_step_reads_nothing_off_the_device_but_the_log(kind, monkeypatch):
    torch.manual_seed(0)
    if kind == "pretraining":
        model, collate, metrics = BertForPreTraining(tiny()), with_positions, pretraining_metrics
    else:
        model, metrics = BertForSequenceClassification(tiny()), class_accuracy
        keep = ("input_ids", "attention_mask", "labels")
        collate = lambda rows: {k: v for k, v in default_collate(rows).items() if k in keep}
    steps, log_every = 20, 10
    config = training.TrainConfig(steps=steps, batch_size=8, lr=1e-3, log_every=log_every,
                                  device="cpu")
    reads = Reads()
    original_update = training.Trainer.update

    def counted_update(self, *args):
        with reads:
            return original_update(self, *args)

    with as_on_an_accelerator(monkeypatch):
        monkeypatch.setattr(training.Trainer, "update", counted_update)
        history = training.train(model, examples(64), config, collate=collate, metrics=metrics)
    assert len([r for r in history if r["split"] == "train"]) == steps // log_every
    assert reads.count == 0  # the log's one read per interval happens outside update()


def test_the_log_reads_the_device_once_per_interval(monkeypatch):
    torch.manual_seed(0)
    reads, tolists = Reads(), []
    original_read = training.Means.read

    def counted_read(self, world=1):
        tolists.append(1)
        return original_read(self, world)

    monkeypatch.setattr(training.Means, "read", counted_read)
    config = training.TrainConfig(steps=20, batch_size=8, lr=1e-3, log_every=10, device="cpu")
    with as_on_an_accelerator(monkeypatch), reads:
        training.train(BertForPreTraining(tiny()), examples(64), config, collate=with_positions,
                       metrics=pretraining_metrics)
    assert len(tolists) == 2  # 20 steps, one read each 10: 0.1 per step
    assert reads.count == 0  # and nothing else (a tolist is not an aten op: counted above)


def test_pretraining_compiles_to_one_graph_without_breaks_over_varying_masked_counts():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny())
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    rows = examples(64)
    counts = set()
    for start in range(0, 64, 8):
        batch = with_positions(rows[start:start + 8])
        counts.add(int((batch["mlm_labels"] != IGNORE_INDEX).sum()))
        compiled(**batch).loss.backward()
    assert len(counts) > 3  # the masked count changes from batch to batch
    assert counter.frame_count == 1  # one graph, traced once: fullgraph=True allows no break


def test_compiled_pretraining_through_the_loop_and_collator_makes_at_most_two_graphs(
        monkeypatch):
    """Real batches (bertlab's collator, fixed mlm_positions, lengths and masked counts that
    vary) through `train(compile=True, fullgraph=True)`, as `bertlab pretrain` compiles: no
    graph break (fullgraph raises at one; a break would add frames too); a graph
    with the attention mask and one without (a batch with no padding leaves it out, for the fused
    kernels), and one more at most (the first change of length makes the sequence dimension
    dynamic). None per masked count."""
    from bertlab.data.pretraining import pretraining_examples
    from bertlab.tokenization import train_wordpiece

    words = "the king queen castle night sword ghost honour thou art crown speak swear".split()
    rng = random.Random(0)
    texts = ["\n".join(" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(40))
             for _ in range(4)]
    tokenizer = train_wordpiece(texts, vocab_size=120)
    data = pretraining_examples(texts, tokenizer, max_seq_len=32, dupe_factor=1,
                                short_seq_prob=0.7, dynamic_masking=True, fixed_positions=True)
    counter = CompileCounter()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    lengths, masked, padded, collate = set(), set(), set(), data.collate

    def watched(rows):
        batch = collate(rows)
        lengths.add(batch["input_ids"].shape[1])
        padded.add(bool((batch["attention_mask"] == 0).any()))
        masked.add(int((batch["mlm_labels"] != IGNORE_INDEX).sum()))
        return batch

    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=32)
    training.train(BertForPreTraining(config), data, training.TrainConfig(
        steps=12, batch_size=2, lr=1e-3, device="cpu", compile=True, fullgraph=True),
        collate=watched,
        metrics=pretraining_metrics)
    assert len(lengths) > 1 and len(masked) > 2
    assert counter.frame_count <= len(padded) + 1
