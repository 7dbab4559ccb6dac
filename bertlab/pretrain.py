"""The pretraining recipe: a WordPiece vocabulary and a BERT trained from scratch with MLM + NSP.

    history = pretrain(PretrainSettings(out="runs/tiny", steps=3000))

It trains a tokenizer on the training works, cuts them into sentence pairs whose tokens are
masked afresh for every batch, trains, evaluates MLM and NSP accuracy on works held out of
training, and leaves in `out` a Hugging Face checkpoint with its tokenizer, the log
(metrics.jsonl), made_by.json and a model card. `bertlab pretrain` parses its arguments into
PretrainSettings and calls `pretrain`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist

from .config import BertConfig
from .data.corpus import Document, iter_documents
from .data.pretraining import pretraining_examples
from .data.store import TokenStore, text_hash
from .data.tasks import TEST
from .metrics import pretraining_metrics
from .model import BertForPreTraining
from .model_card import blank_table, write_model_card
from .runtime import resolve_device
from .tokenization import load_tokenizer, save_tokenizer, train_wordpiece
from .training import (
    RunSettings,
    checkpoints,
    distributed,
    prepare_run_dir,
    resumed_seconds,
    set_seed,
    train,
)

HOLDOUT = TEST  # the fine-tuning test plays: a pretrained model never sees them
LEARNING_RATES = {"tiny": 2e-3, "mini": 1e-3, "base": 1e-4, "large": 5e-5}


@dataclass(kw_only=True)
class PretrainSettings(RunSettings):
    """Everything a pretraining run depends on; `bertlab pretrain --help` explains each."""

    out: str  # the run directory
    corpus: str = "shakespeare"  # or a folder of .txt files, a .txt or a .jsonl file (.gz too)
    holdout: list[str] | None = None  # None: HOLDOUT from shakespeare, none from a folder
    vocab_size: int = 8000
    max_seq_len: int = 64
    max_positions: int | None = None  # None: max_seq_len
    dupe_factor: int = 2
    recipe: str = "course"  # or "original": Google's target lengths and masked counts
    max_predictions: int | None = None  # masked tokens per pair at most; None: 15% of max_seq_len
    nsp: bool = True  # False: MLM only on single chunks of a document (RoBERTa's DOC-SENTENCES)
    store: str | None = None  # the token stores' folder; None: out
    preset: str = "tiny"
    init: str | None = None  # start from this pretrain run's weights and tokenizer
    dropout: float = 0.0
    steps: int = 3000
    batch_size: int = 64
    lr: float | None = None  # None: pretraining_lr(the model's config)
    warmup: float = 0.05
    eval_every: int = 500
    command: list[str] = field(default_factory=list)  # the command line, for the model card

    def __post_init__(self):
        if self.preset not in LEARNING_RATES:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of "
                             f"{tuple(LEARNING_RATES)}")

    @property
    def holdout_titles(self) -> list[str]:
        if self.holdout is not None:
            return self.holdout
        return list(HOLDOUT) if self.corpus == "shakespeare" else []

    @classmethod
    def of_run(cls, run: str | Path) -> PretrainSettings:
        """The settings a pretrain run directory was made with (its pretrain_args.json; a
        setting this bertlab no longer has is left out)."""
        saved = json.loads((Path(run) / "pretrain_args.json").read_text("utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def documents(self) -> Iterator[Document]:
        """The corpus's works, read one at a time."""
        return iter_documents(None if self.corpus == "shakespeare" else self.corpus)


def holding_out(documents: Iterable[Document], titles: list[str],
                held: list[Document]) -> Iterator[Document]:
    """The training works of `documents`, one at a time; the works titled `titles` (matched
    case-insensitively) are put in `held` instead. At the end, a title no work has is an error."""
    wanted, first_titles = {t.lower(): t for t in titles}, []
    for d in documents:
        if len(first_titles) < 20:
            first_titles.append(d.title)
        if d.title.lower() in wanted:
            held.append(d)
        else:
            yield d
    unknown = [t for k, t in wanted.items() if k not in {d.title.lower() for d in held}]
    if unknown:
        raise ValueError(f"--holdout: no work titled {', '.join(map(repr, unknown))}; the works "
                         f"are titled like {', '.join(map(repr, first_titles))}")


def split_holdout(documents: Iterable[Document],
                  titles: list[str]) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out documents); titles match case-insensitively."""
    held: list[Document] = []
    return list(holding_out(documents, titles, held)), held


def pretraining_text(document: Document) -> str:
    """What a work contributes to pretraining: a play's spoken lines, one per line (no titles,
    speaker names or stage directions); any other document's text as it is."""
    if not document.scenes:
        return document.text
    return "\n".join(line for scene in document.scenes for speech in scene.speeches
                     for line in speech.lines)


class TrainingTexts:
    """The training works' texts, read from the corpus afresh at every pass over them, so that
    no corpus is ever all in memory. One pass, when made, keeps the held-out works (they are
    few), counts the others and fingerprints their texts: `key`, which names their token store."""

    def __init__(self, settings: PretrainSettings):
        self.settings, self.held_out, self.count = settings, [], 0
        self.key = text_hash(self.read(self.held_out, counting=True))

    def read(self, held: list[Document], counting: bool = False) -> Iterator[str]:
        for d in holding_out(self.settings.documents(), self.settings.holdout_titles, held):
            self.count += counting
            yield pretraining_text(d)

    def __iter__(self) -> Iterator[str]:
        return self.read([])


def check_init(settings: PretrainSettings, held_out: list[Document]) -> None:
    """--init must be a pretrain run directory that never trained on this run's held-out works
    (it reads --init's corpus once, a work at a time, to see which works it trained on)."""
    if settings.max_positions is not None and settings.init:
        raise ValueError("--max-positions shapes a new model; with --init the model is PATH's")
    if settings.max_positions is not None and settings.max_positions < settings.max_seq_len:
        raise ValueError(f"--max-positions {settings.max_positions} is less than --max-seq-len "
                         f"{settings.max_seq_len}")
    if not settings.init:
        return
    init = Path(settings.init)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json",
                           "pretrain_args.json") if not (init / f).is_file()]
    if missing:
        raise ValueError(f"--init {init} is not a finished `bertlab pretrain` run: it has no "
                         f"{', '.join(missing)}")
    positions = BertConfig.from_json(init).max_position_embeddings
    if settings.max_seq_len > positions:
        raise ValueError(f"--max-seq-len {settings.max_seq_len} exceeds the {positions} "
                         f"positions of --init {init} (give its run a larger --max-positions)")
    before = PretrainSettings.of_run(init)
    held = {d.title.lower() for d in held_out}
    seen = {d.title for d in holding_out(before.documents(), before.holdout_titles, [])
            if d.title.lower() in held}
    if seen:
        raise ValueError(f"--init {init} was trained on {', '.join(sorted(seen))}, which this "
                         "run holds out: its held-out scores would not be held out")


def training_examples(settings: PretrainSettings, texts: TrainingTexts, tokenizer):
    """The training works' pretraining examples, masked afresh for every batch. Their token
    store (STORE/store-HASH) and its pairs are made by the first run or process to ask, and read
    back, memory-mapped, by the others."""
    return pretraining_examples(
        TokenStore.cached(texts, tokenizer, settings.store or settings.out, texts.key),
        tokenizer, settings.max_seq_len, settings.seed, dupe_factor=settings.dupe_factor,
        dynamic_masking=True, recipe=settings.recipe, fixed_positions=True,
        max_predictions_per_seq=settings.max_predictions, nsp=settings.nsp)


def pretraining_model(settings: PretrainSettings, vocab_size: int) -> BertForPreTraining:
    """A new --preset model, or --init's weights (with this run's dropout)."""
    dropout = dict(hidden_dropout_prob=settings.dropout,
                   attention_probs_dropout_prob=settings.dropout)
    if settings.init:
        return BertForPreTraining.from_pretrained(settings.init, **dropout)
    return BertForPreTraining(BertConfig.preset(
        settings.preset, vocab_size=vocab_size,
        max_position_embeddings=settings.max_positions or settings.max_seq_len, **dropout))


def pretraining_lr(config: BertConfig) -> float:
    """The learning rate of the widest preset no wider than the model."""
    widths = {name: BertConfig.preset(name).hidden_size for name in LEARNING_RATES}
    fits = [name for name in LEARNING_RATES if widths[name] <= config.hidden_size] or ["tiny"]
    return LEARNING_RATES[max(fits, key=widths.get)]


def made_by(settings: PretrainSettings, wall_seconds: float) -> list[dict]:
    """The runs that made the model, first to last: --init's (from its made_by.json), then this
    one. Saved as made_by.json, for the model card and for later runs that start from it."""
    init = Path(settings.init) if settings.init else None
    runs = (json.loads((init / "made_by.json").read_text("utf-8"))
            if init and (init / "made_by.json").is_file() else [])
    command = settings.command or ["pretrain", "--out", settings.out]
    runs.append({"command": " ".join(["bertlab", *command]), "steps": settings.steps,
                 "wall_seconds": round(wall_seconds, 1)})
    (Path(settings.out) / "made_by.json").write_text(json.dumps(runs, indent=2) + "\n", "utf-8")
    return runs


def held_out_examples(held_out: list[Document], tokenizer, settings: PretrainSettings):
    """The evaluation set of the held-out works (None if there are none): sentence pairs masked
    once, so that every evaluation, and anyone re-checking a run, asks the same questions."""
    if not held_out:
        return None
    return pretraining_examples([pretraining_text(d) for d in held_out], tokenizer,
                                settings.max_seq_len, settings.seed, dupe_factor=1,
                                recipe=settings.recipe, fixed_positions=True, nsp=settings.nsp,
                                max_predictions_per_seq=settings.max_predictions)


def pretrain(settings: PretrainSettings) -> list[dict]:
    """Run the recipe; returns the training log's rows (process 0's; [] on the others)."""
    started = time.perf_counter()
    out = Path(settings.out)
    resuming = settings.resume and out.is_dir() and checkpoints(out)
    earlier = resumed_seconds(out) if resuming else 0.0
    with distributed(resolve_device(settings.device)) as process:
        texts = TrainingTexts(settings)  # one pass over the corpus
        held_out = texts.held_out
        check_init(settings, held_out)
        saved = {k: v for k, v in dataclasses.asdict(settings).items() if k != "command"}
        prepare_run_dir(out, "pretrain", saved, settings.resume, process)
        if process.rank == 0 and not settings.resume:
            tokenizer = (load_tokenizer(settings.init) if settings.init else
                         train_wordpiece(texts, vocab_size=settings.vocab_size))
            save_tokenizer(tokenizer, out)
            tokenizer.model.save(str(out))  # vocab.txt, for tools that want BERT's vocab file
        if process.rank == 0:  # the token store and its pairs, made here, once
            tokenizer = load_tokenizer(out)
            examples = training_examples(settings, texts, tokenizer)
        if process.world > 1:
            dist.barrier()  # the others wait for them, then read them
        if process.rank != 0:
            tokenizer = load_tokenizer(out)
            examples = training_examples(settings, texts, tokenizer)
        if settings.compile:  # one shape, one graph (CUDA graphs need it): every row padded
            examples.collate.width = settings.max_seq_len
        eval_examples = held_out_examples(held_out, tokenizer, settings)
        set_seed(settings.seed)
        model = pretraining_model(settings, tokenizer.get_vocab_size())
        config = settings.train_config(
            process, out, steps=settings.steps, batch_size=settings.batch_size,
            lr=settings.lr or pretraining_lr(model.config), warmup=settings.warmup,
            fullgraph=True,  # fixed mlm_positions: no shape depends on the masked count
            eval_every=settings.eval_every)
        if process.rank == 0:
            evaluated = (f"evaluating on {len(held_out)} held-out works ({len(eval_examples):,} "
                         "examples)" if held_out else "no held-out works to evaluate on")
            print(f"pretraining a {settings.preset} BERT ({model.num_parameters():,} parameters) "
                  f"on {texts.count} works ({len(examples):,} examples of up to "
                  f"{settings.max_seq_len} tokens); {evaluated}")
        history = train(model, examples, config, collate=examples.collate,
                        eval_data=eval_examples,
                        eval_collate=eval_examples.collate if eval_examples else None,
                        metrics=pretraining_metrics, process=process)
    if process.rank != 0:
        return []
    held_out_lines = [line for d in held_out for line in pretraining_text(d).splitlines()]
    write_model_card(
        out, made_by(settings, earlier + time.perf_counter() - started), process.device,
        [d.title for d in held_out],
        f"{texts.count} works, {len(examples):,} sentence pairs of up to "
        f"{settings.max_seq_len} tokens (dupe factor {settings.dupe_factor})",
        blank_table(model, tokenizer, held_out_lines))
    return history
