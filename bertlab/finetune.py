"""The fine-tuning recipe: a BERT and a fresh head, trained on a task and scored on dev and test.

    results = finetune(FinetuneSettings(task="genre", out="runs/genre"))
    results["test"]["accuracy"]

A task binds the examples of `bertlab.data.tasks` to a model class, a head size, the training
log's metrics and an evaluation. The course's four tasks are in TASKS; your own labelled files
(CSV, TSV, JSONL: see `bertlab.data.files`) make a sequence-classification task of their own.
`bertlab finetune` parses its arguments into FinetuneSettings and calls `finetune`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import COURSE_MODEL, CheckpointWarning, minilm_path
from .config import IGNORE_INDEX, BertConfig
from .data.files import read_labelled_files
from .data.tasks import (
    GENRE_LABELS,
    MAX_ANSWER_TOKENS,
    TAGS,
    TASK_NAMES,
    TaskData,
    encode_task,
    load_task,
    subsample,
)
from .metrics import (
    accuracy,
    best_span,
    class_accuracy,
    entity_scores,
    exact_match,
    span_accuracy,
    token_accuracy,
    token_f1,
)
from .model import (
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from .runtime import resolve_device
from .tokenization import load_tokenizer, save_tokenizer
from .training import (
    AUTOCAST_DTYPES,
    RunSettings,
    distributed,
    prepare_run_dir,
    resolve_precision,
    set_seed,
    train,
)

# ----------------------------------------------------------------------------------------------
# The tasks: model, labels, metrics


@dataclass(frozen=True)
class Task:
    name: str  # how encode_task knows its examples ("classify" for your own files)
    model_class: type
    num_labels: int | None  # the head's classes (config.num_labels); None if it has none
    metric: str  # the headline score: a key of what `evaluate` returns
    batch_metrics: Callable  # (batch, output) -> {name: value}: the training log's metrics
    predict: Callable  # (rows, batch, output) -> one prediction per example
    score: Callable  # (rows, predictions) -> {name: value}
    label_names: tuple[str, ...] | None = None  # saved in config.json as id2label


def predict_classes(rows, batch, output) -> list[int]:
    return output.logits.argmax(-1).tolist()


def score_classes(rows, predictions) -> dict[str, float]:
    return {"accuracy": accuracy(predictions, [row["labels"] for row in rows])}


def predict_tags(rows, batch, output) -> list[list[str]]:
    """The predicted tag of every tagged token (a word's first piece), per example."""
    tags = output.logits.argmax(-1)  # (B, T)
    return [[TAGS[t] for t in row_tags[labels != IGNORE_INDEX].tolist()]
            for row_tags, labels in zip(tags, batch["labels"])]


def score_tags(rows, predictions) -> dict[str, float]:
    gold = [[TAGS[t] for t in row["labels"] if t != IGNORE_INDEX] for row in rows]
    return entity_scores(gold, predictions)


def predict_spans(rows, batch, output) -> list[str]:
    """The text of each example's best span within its context."""
    answers = []
    for row, start_logits, end_logits in zip(rows, output.start_logits, output.end_logits):
        start, end = best_span(start_logits, end_logits, *row["context_tokens"],
                               max_tokens=MAX_ANSWER_TOKENS)
        answers.append(row["context"][row["offsets"][start][0]:row["offsets"][end][1]])
    return answers


def score_spans(rows, predictions) -> dict[str, float]:
    answers = [row["answer"] for row in rows]
    return {"exact_match": sum(map(exact_match, predictions, answers)) / len(rows),
            "f1": sum(map(token_f1, predictions, answers)) / len(rows)}


def classification_task(name: str, label_names: tuple[str, ...]) -> Task:
    return Task(name, BertForSequenceClassification, len(label_names), "accuracy",
                class_accuracy, predict_classes, score_classes, tuple(label_names))


TASKS = {
    "genre": classification_task("genre", GENRE_LABELS),
    "next_line": Task("next_line", BertForMultipleChoice, None, "accuracy", class_accuracy,
                      predict_classes, score_classes),
    "names": Task("names", BertForTokenClassification, len(TAGS), "f1", token_accuracy,
                  predict_tags, score_tags, TAGS),
    "who_said": Task("who_said", BertForQuestionAnswering, None, "exact_match", span_accuracy,
                     predict_spans, score_spans),
}
assert tuple(TASKS) == TASK_NAMES


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {tuple(TASKS)}")
    return TASKS[name]


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, data: TaskData, batch_size: int = 64,
             autocast: torch.dtype | None = None) -> dict[str, float]:
    """The task's metrics of `model` on `data`, in eval mode (dropout off), on the model's
    device; `autocast` (torch.bfloat16, torch.float16) runs it in mixed precision."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(data), batch_size):
        rows = data.rows[start:start + batch_size]
        batch = {k: v.to(device) for k, v in data.collate(rows).items()}
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            output = model(**batch)
        predictions += task.predict(rows, batch, output)
    model.train(was_training)
    return task.score(data.rows, predictions)


# ----------------------------------------------------------------------------------------------
# The recipe


@dataclass(kw_only=True)
class FinetuneSettings(RunSettings):
    """Everything a fine-tuning run depends on; `bertlab finetune --help` explains each."""

    out: str  # the run directory
    task: str | None = None  # one of TASKS; None with train_file
    train_file: str | None = None  # your own data instead of a task: CSV, TSV or JSONL
    dev_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    init: str = str(COURSE_MODEL)  # a checkpoint directory, "minilm" or "scratch"
    config_from: str | None = None  # with init "scratch": whose config and tokenizer
    train_size: int | None = None  # a random subset of the training set (None: all)
    max_seq_len: int = 64
    dropout: float = 0.1
    epochs: float = 3.0
    min_steps: int = 300
    max_steps: int | None = None
    batch_size: int = 32
    lr: float | None = None  # None: default_lr(the model's config)
    warmup: float = 0.1

    def __post_init__(self):
        if (self.task is None) == (self.train_file is None):
            raise ValueError("give a task (--task) or your own training file (--train-file), "
                             "not both" if self.task else "give --task or --train-file")
        if self.train_file is None and (self.dev_file or self.test_file):
            raise ValueError("--dev-file and --test-file go with --train-file")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.epochs <= 0:
            raise ValueError(f"--epochs must be > 0, got {self.epochs}")
        for name in ("min_steps", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, "
                                 f"got {getattr(self, name)}")

    def steps(self, num_examples: int) -> int:
        """--epochs passes over the training set, but at least --min-steps updates (a small set
        needs many passes) and at most --max-steps."""
        steps = max(self.min_steps, math.ceil(self.epochs * num_examples / self.batch_size))
        return min(steps, self.max_steps or steps)


def default_lr(config: BertConfig) -> float:
    """Small models take large steps: 5e-4 below 384 wide, 1e-4 below 768, else 3e-5."""
    return 5e-4 if config.hidden_size < 384 else 1e-4 if config.hidden_size < 768 else 3e-5


def init_source(settings: FinetuneSettings) -> tuple[Path, bool]:
    """The checkpoint directory to start from (or, for scratch, to copy the shape and tokenizer
    of), and whether to start from scratch."""
    scratch = settings.init == "scratch"
    if settings.config_from and not scratch:
        raise ValueError("--config-from goes with --init scratch only")
    if settings.init == "minilm":
        try:
            return minilm_path(), False
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
    source = Path(settings.config_from or COURSE_MODEL) if scratch else Path(settings.init)
    option = "--config-from" if scratch else "--init"
    if not source.is_dir() and source == COURSE_MODEL:
        raise ValueError(f"{option} defaults to the course's checkpoint {source}, which is not "
                         f"there: pass {option} DIR, a checkpoint directory with config.json and "
                         "tokenizer.json (`bertlab pretrain` makes one)")
    missing = [f for f in ("config.json", "tokenizer.json") if not (source / f).is_file()]
    if missing:
        raise ValueError(f"{option} {source} is not a checkpoint directory with its tokenizer: "
                         f"it has no {' or '.join(missing)}")
    return source, scratch


def task_examples(settings: FinetuneSettings) -> tuple[Task, dict[str, list]]:
    """The task and its examples by split: a course task's, or those of your own files."""
    if settings.task is not None:
        return get_task(settings.task), {split: load_task(settings.task, split)
                                         for split in ("train", "dev", "test")}
    data = read_labelled_files(settings.train_file, settings.dev_file, settings.test_file,
                               text=settings.text_column, text_pair=settings.pair_column,
                               label=settings.label_column)
    if len(data.label_names) < 2:
        raise ValueError(f"{settings.train_file}: every row has the label "
                         f"{data.label_names[0]!r}; a classifier needs at least two")
    splits = {"train": data.train, "dev": data.dev, "test": data.test}
    return (classification_task("classify", data.label_names),
            {split: examples for split, examples in splits.items() if examples is not None})


def finetuning_model(task: Task, source: Path, scratch: bool, settings: FinetuneSettings):
    """The task's model: the checkpoint's weights and a fresh head, or all fresh for scratch."""
    overrides = dict(hidden_dropout_prob=settings.dropout,
                     attention_probs_dropout_prob=settings.dropout)
    if task.num_labels is not None:
        overrides |= dict(num_labels=task.num_labels, label_names=task.label_names)
    if scratch:
        model = task.model_class(dataclasses.replace(BertConfig.from_json(source), **overrides))
    else:
        with warnings.catch_warnings():  # a fresh head is what fine-tuning expects
            warnings.simplefilter("ignore", CheckpointWarning)
            model = task.model_class.from_pretrained(source, **overrides)
    if settings.max_seq_len > model.config.max_position_embeddings:
        raise ValueError(f"--max-seq-len {settings.max_seq_len} exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    return model


def finetune(settings: FinetuneSettings) -> dict:
    """Fine-tune, save the model in settings.out, score it on dev and test (those there are);
    returns what results.json holds."""
    task, examples = task_examples(settings)
    source, scratch = init_source(settings)
    tokenizer = load_tokenizer(source)
    train_size = len(examples["train"])
    if settings.train_size is not None and not 0 < settings.train_size <= train_size:
        raise ValueError(f"--train-size must be from 1 to {train_size:,} (the {task.name} "
                         f"training set), got {settings.train_size}")
    out = Path(settings.out)
    with distributed(resolve_device(settings.device)) as process:
        set_seed(settings.seed)
        model = finetuning_model(task, source, scratch, settings)
        if tokenizer.get_vocab_size() > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size():,} tokens, the model "
                             f"{model.config.vocab_size:,}: they do not belong together")
        examples["train"] = subsample(examples["train"], settings.train_size, settings.seed)
        data = {split: encode_task(task.name, xs, tokenizer, settings.max_seq_len)
                for split, xs in examples.items()}
        if settings.compile:  # one shape, one graph: not a recompile per longest row
            data["train"].width = settings.max_seq_len
        config = settings.train_config(
            process, out, steps=settings.steps(len(data["train"])),
            batch_size=settings.batch_size, lr=settings.lr or default_lr(model.config),
            warmup=settings.warmup)
        prepare_run_dir(out, "finetune", dataclasses.asdict(settings), settings.resume, process)
        if process.rank == 0:
            save_tokenizer(tokenizer, out)
            print(f"fine-tuning {'a fresh model' if scratch else source} "
                  f"({model.num_parameters():,} parameters) on {task.name}: "
                  f"{len(data['train']):,} examples, {config.steps} steps at lr {config.lr:g}")
        started = time.perf_counter()
        train(model, data["train"], config, collate=data["train"].collate,
              metrics=task.batch_metrics, process=process)
        trained = time.perf_counter()
    if process.rank != 0:
        return {}
    autocast = AUTOCAST_DTYPES[resolve_precision(settings.precision, process.device)]
    scores = {split: evaluate(task, model, data[split], settings.batch_size, autocast)
              for split in ("dev", "test") if split in data}
    results = {"task": task.name, "metric": task.metric,
               "init": "scratch" if scratch else str(source), "train_size": len(data["train"]),
               "steps": config.steps, "lr": config.lr, "seed": settings.seed, **scores,
               "train_seconds": round(trained - started, 1),
               "eval_seconds": round(time.perf_counter() - trained, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
