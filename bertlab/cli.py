"""The `bertlab` command.

Each subcommand is two functions: `add_NAME(commands)` declares its arguments, `NAME(args)` runs
it and returns the exit status. A ValueError means the user asked for something that cannot be
done: `main` prints it as one line, `bertlab: error: ...`, and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import COURSE_MODEL, CheckpointWarning, minilm_path
from .config import BertConfig
from .data.corpus import load_corpus
from .data.pretraining import pretraining_examples
from .data.tasks import TASKS, TEST, encode_task, evaluate, get_task, load_task, subsample
from .grading_runtime import Limits
from .model import BertForPreTraining
from .model_card import blanks, write_model_card
from .runtime import default_device
from .tokenization import load_tokenizer, save_tokenizer, train_wordpiece
from .training import (
    AUTOCAST_DTYPES,
    TrainConfig,
    checkpoints,
    distributed,
    pretraining_metrics,
    resolve_precision,
    resumed_seconds,
    set_seed,
    train,
)

EXAMPLES = """\
Get started with
  bertlab pretrain --out runs/tiny
and see `bertlab COMMAND --help` for each command."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bertlab", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="BERT, built to be read: pretrain and fine-tune "
                                                 "small BERTs, grade the course's exercises.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_pretrain(commands)
    add_finetune(commands)
    add_make_exercises(commands)
    add_grade(commands)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the model card's command
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except ValueError as e:
        print(f"bertlab: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # the loss diverged
        print(f"bertlab: error: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------- pretrain

HOLDOUT = TEST  # the fine-tuning test plays: a pretrained model never sees them
LEARNING_RATES = {"tiny": 2e-3, "mini": 1e-3, "base": 1e-4, "large": 5e-5}
RESUMABLE_CHANGES = ("resume", "device", "precision", "compile", "grad_accum")  # same run still

PRETRAIN_HELP = """\
Pretrain a BERT from scratch with masked language modeling and next sentence prediction.

Trains a WordPiece tokenizer on the training works, cuts them into sentence pairs whose tokens
are masked afresh for every batch, trains, and reports MLM and NSP accuracy on works held out of
training. OUT becomes a Hugging Face checkpoint with its tokenizer (config.json,
model.safetensors, tokenizer.json, vocab.txt), beside metrics.jsonl (the log) and
checkpoint-STEP/ (to resume from).

examples:
  bertlab pretrain --out runs/tiny                       # tiny model, Shakespeare, 3000 steps
  bertlab pretrain --out runs/tiny --precision bf16      # faster on CPUs with native bf16
                                                         # (AVX-512 BF16, AMX); slower without
  bertlab pretrain --preset mini --corpus my_texts/ --steps 10000 --out runs/mine
  bertlab pretrain --out runs/tiny --resume              # continue where it stopped
  torchrun --nproc_per_node=4 $(which bertlab) pretrain --preset base --out runs/base

Short pairs first, then long ones (BERT: 90% of its steps at 128 tokens, then 512): a tiny model
leaves the "most common words" plateau far sooner on short pairs. The second run starts from the
first's weights and tokenizer (--init), with fresh optimizer and schedule:
  bertlab pretrain --max-seq-len 32 --max-positions 64 --batch-size 128 --steps 1500 \
      --out runs/short
  bertlab pretrain --init runs/short --max-seq-len 64 --steps 11500 --out runs/tiny
"""


def add_hardware_arguments(group) -> None:
    """How a run uses the machine: the same flags for pretrain and finetune."""
    group.add_argument("--grad-accum", type=int, default=1,
                       help="split each batch into this many micro-batches: the same update "
                            "in less memory (%(default)s)")
    group.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                       help="auto (the default): bf16 on GPUs that have it, else fp16; fp32 "
                            "elsewhere. On a CPU, bf16 is ~2x faster with AVX-512 BF16 "
                            "(`lscpu | grep avx512_bf16`) and ~20x slower without")
    group.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: the best present)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the model (faster on GPUs)")


def add_pretrain(commands) -> None:
    p = commands.add_parser("pretrain", help="pretrain a small BERT on a corpus",
                            description=PRETRAIN_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=pretrain)
    data = p.add_argument_group("data")
    data.add_argument("--corpus", default="shakespeare",
                      help="'shakespeare' (the bundled works, the default) or a folder of .txt "
                           "files, one work each")
    data.add_argument("--holdout", nargs="*", metavar="TITLE",
                      help="works to hold out of training and evaluate on (titles; for a folder, "
                           f"file names without .txt). Default: {', '.join(HOLDOUT)} from "
                           "shakespeare, none from a folder. No TITLE: none")
    data.add_argument("--vocab-size", type=int, default=8000,
                      help="WordPiece vocabulary size (%(default)s)")
    data.add_argument("--max-seq-len", type=int, default=64,
                      help="tokens per example (%(default)s)")
    data.add_argument("--max-positions", type=int,
                      help="position embeddings of a new model (default: --max-seq-len); more "
                           "lets a later run with --init train on longer pairs")
    data.add_argument("--dupe-factor", type=int, default=2,
                      help="passes over the corpus, each cutting it into different sentence "
                           "pairs (%(default)s)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", default="tiny", choices=list(LEARNING_RATES),
                       help="model size: tiny (2 layers, 128 wide; the default), mini (4, 256), "
                            "base (12, 768), large (24, 1024)")
    model.add_argument("--init", metavar="PATH",
                       help="start from this checkpoint's weights and tokenizer (a `bertlab "
                            "pretrain` run directory; --preset and --vocab-size are then "
                            "unused), not from a new model")
    model.add_argument("--dropout", type=float, default=0.0,
                       help="dropout probability (%(default)s: learns faster at small scale)")
    training = p.add_argument_group("training")
    training.add_argument("--steps", type=int, default=3000, help="optimizer updates (%(default)s)")
    training.add_argument("--batch-size", type=int, default=64,
                          help="examples per update (%(default)s)")
    training.add_argument("--lr", type=float,
                          help="peak learning rate; by preset (or --init's width): " +
                               ", ".join(f"{k} {v:g}" for k, v in LEARNING_RATES.items()))
    training.add_argument("--warmup", type=float, default=0.05,
                          help="warmup: a fraction of --steps (< 1) or a number of steps "
                               "(%(default)s)")
    add_hardware_arguments(training)
    training.add_argument("--seed", type=int, default=0,
                          help="seeds the model, the data and its masks (%(default)s)")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="the run directory, e.g. runs/tiny")
    run.add_argument("--eval-every", type=int, default=500,
                     help="steps between evaluations (%(default)s)")
    run.add_argument("--checkpoint-every", type=int, default=500,
                     help="steps between checkpoints (%(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint (same settings)")


def pretrain(args) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    earlier = resumed_seconds(out) if args.resume and checkpoints(out) else 0.0
    device = torch.device(args.device) if args.device else default_device()
    with distributed(device) as (rank, world, device):  # under torchrun: one of `world` processes
        documents = load_corpus(None if args.corpus == "shakespeare" else args.corpus)
        training_docs, held_out = split_holdout(documents, holdout_titles(args))
        check_init(args, documents, held_out)
        if rank == 0:
            prepare_run_dir(out, args)
        texts = [pretraining_text(d) for d in training_docs]
        if rank == 0 and not args.resume:
            tokenizer = (load_tokenizer(args.init) if args.init else
                         train_wordpiece(texts, vocab_size=args.vocab_size))
            save_tokenizer(tokenizer, out)
            tokenizer.model.save(str(out))  # vocab.txt, for tools that want BERT's vocab file
        if world > 1:
            dist.barrier()  # the other processes wait for it, then all read the same file
        tokenizer = load_tokenizer(out)
        examples = pretraining_examples(texts, tokenizer, args.max_seq_len, args.seed,
                                        dupe_factor=args.dupe_factor, dynamic_masking=True)
        eval_examples = held_out_examples(held_out, tokenizer, args.max_seq_len, args.seed)
        eval_collate = eval_examples.collate if eval_examples is not None else None

        set_seed(args.seed)
        model = pretraining_model(args, tokenizer.get_vocab_size())
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
            lr=args.lr or pretraining_lr(model.config), warmup=args.warmup,
            precision=args.precision, device=str(device), compile=args.compile, seed=args.seed,
            eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, out_dir=out,
            resume=args.resume)
        if rank == 0:
            evaluated = (f"evaluating on {len(held_out)} held-out works ({len(eval_examples):,} "
                         "examples)" if held_out else "no held-out works to evaluate on")
            print(f"pretraining a {args.preset} BERT ({model.num_parameters():,} parameters) on "
                  f"{len(training_docs)} works ({len(examples):,} examples of up to "
                  f"{args.max_seq_len} tokens); {evaluated}")
        history = train(model, examples, config, collate=examples.collate,
                        eval_data=eval_examples, eval_collate=eval_collate,
                        metrics=pretraining_metrics)
        if rank == 0:
            held_out_lines = [line for d in held_out for line in pretraining_text(d).splitlines()]
            write_model_card(
                out, made_by(args, earlier + time.perf_counter() - started), device,
                [d.title for d in held_out],
                f"{len(training_docs)} works, {len(examples):,} sentence pairs of up to "
                f"{args.max_seq_len} tokens (dupe factor {args.dupe_factor})",
                blanks(model, tokenizer, held_out_lines) if held_out_lines else [])
    if rank == 0:
        final = [row for row in history if row["split"] == "eval"][-1:]
        scores = (f"held-out MLM accuracy {final[0]['mlm_acc']:.1%}, NSP accuracy "
                  f"{final[0]['nsp_acc']:.1%}; " if final else "")
        print(f"done: {scores}the model and its tokenizer are in {out}")
    return 0


def check_init(args, documents, held_out) -> None:
    """--init must be a pretrain run directory that never trained on this run's held-out works
    (`documents`: this run's corpus, reused when --init's is the same)."""
    if args.max_positions is not None and args.init:
        raise ValueError("--max-positions shapes a new model; with --init the model is PATH's")
    if args.max_positions is not None and args.max_positions < args.max_seq_len:
        raise ValueError(f"--max-positions {args.max_positions} is less than --max-seq-len "
                         f"{args.max_seq_len}")
    if not args.init:
        return
    init = Path(args.init)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json",
                           "pretrain_args.json") if not (init / f).is_file()]
    if missing:
        raise ValueError(f"--init {init} is not a finished `bertlab pretrain` run: it has no "
                         f"{', '.join(missing)}")
    positions = BertConfig.from_json(init).max_position_embeddings
    if args.max_seq_len > positions:
        raise ValueError(f"--max-seq-len {args.max_seq_len} exceeds the {positions} positions of "
                         f"--init {init} (give its run a larger --max-positions)")
    before = argparse.Namespace(**json.loads((init / "pretrain_args.json").read_text("utf-8")))
    if before.corpus != args.corpus:
        documents = load_corpus(None if before.corpus == "shakespeare" else before.corpus)
    _, its_held_out = split_holdout(documents, holdout_titles(before))
    seen = {d.title for d in held_out} - {d.title for d in its_held_out}
    if seen:
        raise ValueError(f"--init {init} was trained on {', '.join(sorted(seen))}, which this "
                         "run holds out: its held-out scores would not be held out")


def pretraining_model(args, vocab_size: int) -> BertForPreTraining:
    """A new --preset model, or --init's weights (with this run's dropout)."""
    dropout = dict(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    if args.init:
        return BertForPreTraining.from_pretrained(args.init, **dropout)
    return BertForPreTraining(BertConfig.preset(
        args.preset, vocab_size=vocab_size,
        max_position_embeddings=args.max_positions or args.max_seq_len, **dropout))


def pretraining_lr(config: BertConfig) -> float:
    """The learning rate of the widest preset no wider than the model."""
    widths = {name: BertConfig.preset(name).hidden_size for name in LEARNING_RATES}
    fits = [name for name in LEARNING_RATES if widths[name] <= config.hidden_size] or ["tiny"]
    return LEARNING_RATES[max(fits, key=widths.get)]


def made_by(args, wall_seconds: float) -> list[dict]:
    """The runs that made the model, first to last: --init's (from its made_by.json), then this
    one. Saved as made_by.json, for the model card and for later runs that start from it."""
    runs = (json.loads((Path(args.init) / "made_by.json").read_text("utf-8"))
            if args.init and (Path(args.init) / "made_by.json").is_file() else [])
    runs.append({"command": " ".join(["bertlab", *args.argv]), "steps": args.steps,
                 "wall_seconds": round(wall_seconds, 1)})
    (Path(args.out) / "made_by.json").write_text(json.dumps(runs, indent=2) + "\n", "utf-8")
    return runs


def held_out_examples(held_out, tokenizer, max_seq_len: int, seed: int):
    """The evaluation set of the held-out works (None if there are none): sentence pairs masked
    once, so that every evaluation, and anyone re-checking a run, asks the same questions."""
    if not held_out:
        return None
    return pretraining_examples([pretraining_text(d) for d in held_out], tokenizer, max_seq_len,
                                seed, dupe_factor=1)


def prepare_run_dir(out: Path, args) -> None:
    """A new run needs an empty directory; a resumed one the settings it was started with.
    Saves the settings as COMMAND_args.json (pretrain_args.json, finetune_args.json)."""
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "command", "argv")}
    saved_file = out / f"{args.command}_args.json"
    if args.resume:
        if not saved_file.is_file():
            raise ValueError(f"nothing to resume: {out} holds no `bertlab {args.command}` run")
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        changed = [f"--{k.replace('_', '-')} {settings[k]} (the run has {saved.get(k)})"
                   for k in settings if k not in RESUMABLE_CHANGES and saved.get(k) != settings[k]]
        if changed:
            raise ValueError("--resume continues a run with the settings it started with; "
                             f"these differ: {'; '.join(changed)}")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose a new --out, or add --resume to continue "
                         "the run in it")
    out.mkdir(parents=True, exist_ok=True)
    saved_file.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def holdout_titles(args) -> list[str]:
    if args.holdout is not None:
        return args.holdout
    return list(HOLDOUT) if args.corpus == "shakespeare" else []


def split_holdout(documents, titles: list[str]):
    """(training documents, held-out documents); titles match case-insensitively."""
    by_title = {d.title.lower(): d for d in documents}
    unknown = [t for t in titles if t.lower() not in by_title]
    if unknown:
        raise ValueError(f"--holdout: no work titled {', '.join(map(repr, unknown))}; the works "
                         f"are: {', '.join(d.title for d in documents)}")
    held = {t.lower() for t in titles}
    return ([d for d in documents if d.title.lower() not in held],
            [d for d in documents if d.title.lower() in held])


def pretraining_text(document) -> str:
    """What a work contributes to pretraining: a play's spoken lines, one per line (no titles,
    speaker names or stage directions); any other document's text as it is."""
    if not document.scenes:
        return document.text
    return "\n".join(line for scene in document.scenes for speech in scene.speeches
                     for line in speech.lines)


# ---------------------------------------------------------------------------------- finetune

FINETUNE_HELP = """\
Fine-tune a BERT on one of the course's four tasks and score it on the task's dev and test works.

tasks (built from the plays, split by work; see data/README.md):
  genre      4 spoken lines -> comedy, history or tragedy       accuracy (chance 33%)
  next_line  a line, 4 candidates -> the line that follows it   accuracy (chance 25%)
  names      2 spoken lines -> the characters' names in them    entity F1
  who_said   a line in a scene fragment -> its speaker tag      exact match

--init, where to start:
  PATH     a bertlab or Hugging Face checkpoint directory with its tokenizer.json
           (default: the course's checkpoint, models/bertlab-tiny-shakespeare)
  minilm   the real all-MiniLM-L6-v2 (6 layers, 384 wide), with its own tokenizer
  scratch  random weights: the shape and tokenizer of --config-from (default: the course's
           checkpoint), to measure what pretraining is worth

Training makes --epochs passes over the training set, but at least --min-steps updates (a small
set needs many passes) and at most --max-steps. The learning rate defaults to the model's width:
5e-4 below 384 (tiny models need large steps), 1e-4 up to 768 (MiniLM; 5e-5 to 1e-4 work),
3e-5 for BERT-base and larger. OUT receives metrics.jsonl (the training log), the fine-tuned
model with its tokenizer.json, and results.json (dev and test scores).

examples:
  bertlab finetune --task genre --out runs/genre
  bertlab finetune --task genre --init scratch --train-size 1000 --seed 1 --out runs/genre-s1
  bertlab finetune --task who_said --init minilm --out runs/who-minilm
  bertlab finetune --task names --init runs/tiny --out runs/names   # after bertlab pretrain
"""


def add_finetune(commands) -> None:
    p = commands.add_parser("finetune", help="fine-tune a BERT on one of the course's tasks",
                            description=FINETUNE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=finetune)
    what = p.add_argument_group("task and model")
    what.add_argument("--task", required=True, choices=list(TASKS), help="the task to learn")
    what.add_argument("--init", default=str(COURSE_MODEL), metavar="PATH|minilm|scratch",
                      help="where to start (default: the course's checkpoint)")
    what.add_argument("--config-from", metavar="PATH",
                      help="with --init scratch: the checkpoint directory whose config.json and "
                           "tokenizer.json to use (default: the course's checkpoint)")
    what.add_argument("--train-size", type=int, metavar="N",
                      help="train on N examples drawn at random (by --seed) from the training "
                           "set (default: all)")
    what.add_argument("--max-seq-len", type=int, default=64,
                      help="tokens per example, at most the model's positions (%(default)s)")
    what.add_argument("--dropout", type=float, default=0.1,
                      help="dropout probability while fine-tuning, whatever the checkpoint had "
                           "(%(default)s, as BERT)")
    training = p.add_argument_group("training")
    training.add_argument("--epochs", type=float, default=3.0,
                          help="passes over the training set (%(default)s)")
    training.add_argument("--min-steps", type=int, default=300,
                          help="at least this many updates, however small the set (%(default)s)")
    training.add_argument("--max-steps", type=int,
                          help="at most this many updates (default: no limit)")
    training.add_argument("--batch-size", type=int, default=32,
                          help="examples per update (%(default)s)")
    training.add_argument("--lr", type=float,
                          help="peak learning rate (default: by the model's width, see above)")
    training.add_argument("--warmup", type=float, default=0.1,
                          help="warmup: a fraction of the steps (< 1) or a number of steps "
                               "(%(default)s)")
    add_hardware_arguments(training)
    training.add_argument("--seed", type=int, default=0,
                          help="seeds the training subset, the new head, dropout and the order "
                               "(%(default)s); the task's examples are always the same")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="the run directory, e.g. runs/genre")
    run.add_argument("--checkpoint-every", type=int, default=500,
                     help="steps between checkpoints, 0 for none (%(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint (same settings)")


def finetune(args) -> int:
    check_finetune_args(args)
    task = get_task(args.task)
    out = Path(args.out)
    source, scratch = init_source(args)
    tokenizer = load_tokenizer(source)
    examples = load_task(task.name, "train")
    if args.train_size is not None and not 0 < args.train_size <= len(examples):
        raise ValueError(f"--train-size must be from 1 to {len(examples):,} (the {task.name} "
                         f"training set), got {args.train_size}")
    device = torch.device(args.device) if args.device else default_device()
    with distributed(device) as (rank, world, device):  # under torchrun: one of `world` processes
        set_seed(args.seed)
        model = finetuning_model(task, source, scratch, args)
        if tokenizer.get_vocab_size() > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size():,} tokens, the model "
                             f"{model.config.vocab_size:,}: they do not belong together")
        train_data, dev_data, test_data = (
            encode_task(task.name, data, tokenizer, args.max_seq_len) for data in
            (subsample(examples, args.train_size, args.seed), load_task(task.name, "dev"),
             load_task(task.name, "test")))
        steps = max(args.min_steps, math.ceil(args.epochs * len(train_data) / args.batch_size))
        config = TrainConfig(
            steps=min(steps, args.max_steps or steps), batch_size=args.batch_size,
            grad_accum=args.grad_accum, lr=args.lr or default_lr(model.config),
            warmup=args.warmup, precision=args.precision, device=str(device),
            compile=args.compile, seed=args.seed, checkpoint_every=args.checkpoint_every,
            out_dir=out, resume=args.resume)
        if rank == 0:
            prepare_run_dir(out, args)
            save_tokenizer(tokenizer, out)
            print(f"fine-tuning {'a fresh model' if scratch else source} "
                  f"({model.num_parameters():,} parameters) on {task.name}: "
                  f"{len(train_data):,} examples, {config.steps} steps at lr {config.lr:g}")
        started = time.perf_counter()
        train(model, train_data, config, collate=train_data.collate, metrics=task.batch_metrics)
        trained = time.perf_counter()
    if rank == 0:
        autocast = AUTOCAST_DTYPES[resolve_precision(args.precision, device)]
        scores = {split: evaluate(task, model, data, args.batch_size, autocast)
                  for split, data in (("dev", dev_data), ("test", test_data))}
        results = {"task": task.name, "metric": task.metric,
                   "init": "scratch" if scratch else str(source), "train_size": len(train_data),
                   "steps": config.steps, "lr": config.lr, "seed": args.seed, **scores,
                   "train_seconds": round(trained - started, 1),
                   "eval_seconds": round(time.perf_counter() - trained, 1)}
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"done: dev {task.metric} {scores['dev'][task.metric]:.1%}, test {task.metric} "
              f"{scores['test'][task.metric]:.1%}; scores in {out / 'results.json'}")
    return 0


def check_finetune_args(args) -> None:
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {args.epochs}")
    for name in ("min_steps", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def init_source(args) -> tuple[Path, bool]:
    """The checkpoint directory to start from (or, for scratch, to copy the shape and tokenizer
    of), and whether to start from scratch."""
    scratch = args.init == "scratch"
    if args.config_from and not scratch:
        raise ValueError("--config-from goes with --init scratch only")
    if args.init == "minilm":
        try:
            return minilm_path(), False
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
    source = Path(args.config_from or COURSE_MODEL) if scratch else Path(args.init)
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


def finetuning_model(task, source: Path, scratch: bool, args):
    """The task's model: the checkpoint's weights and a fresh head, or all fresh for scratch."""
    overrides = dict(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    if task.num_labels is not None:
        overrides["num_labels"] = task.num_labels
    if scratch:
        model = task.model_class(dataclasses.replace(BertConfig.from_json(source), **overrides))
    else:
        with warnings.catch_warnings():  # a fresh head is what fine-tuning expects
            warnings.simplefilter("ignore", CheckpointWarning)
            model = task.model_class.from_pretrained(source, **overrides)
    if args.max_seq_len > model.config.max_position_embeddings:
        raise ValueError(f"--max-seq-len {args.max_seq_len} exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    return model


def default_lr(config: BertConfig) -> float:
    """Small models take large steps: 5e-4 below 384 wide, 1e-4 below 768, else 3e-5."""
    return 5e-4 if config.hidden_size < 384 else 1e-4 if config.hidden_size < 768 else 3e-5


# ---------------------------------------------------------------------------- make-exercises

MAKE_EXERCISES_HELP = """\
Write the student notebooks from the solution notebooks.

Each solution region (### BEGIN SOLUTION ... ### END SOLUTION) becomes a stub that raises
NotImplementedError (a function keeps its signature and docstring); hidden tests (### BEGIN
HIDDEN TESTS ... ### END HIDDEN TESTS) are removed; outputs are cleared. The same solutions always
give the same bytes.

examples:
  bertlab make-exercises solutions/ exercises/
  bertlab make-exercises solutions/ exercises/ --check    # exit 1 if exercises/ is out of date
"""


def add_make_exercises(commands) -> None:
    p = commands.add_parser("make-exercises", help="write exercise notebooks from solutions",
                            description=MAKE_EXERCISES_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=make_exercises)
    p.add_argument("solutions", help="a solution notebook or a folder of them")
    p.add_argument("exercises", help="the folder to write the exercise notebooks into")
    p.add_argument("--check", action="store_true",
                   help="write nothing; list what differs and exit 1 if anything does")


def make_exercises(args) -> int:
    from . import authoring  # nbformat takes seconds to import: only this command needs it

    if args.check:
        problems = authoring.stale_exercises(Path(args.solutions), Path(args.exercises))
        for problem in problems:
            print(f"{args.exercises}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    for path in authoring.make_exercises(Path(args.solutions), Path(args.exercises)):
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------- grade

GRADE_HELP = """\
Grade student notebooks against the solution notebooks.

Each SUBMISSION is a notebook or a folder searched for notebooks. A notebook named like a solution
notebook (submissions/alice/03_attention.ipynb) is that assignment, by the student named by its
folder (alice). With a single solution notebook, any notebook is that assignment, by the student
named by its file (submissions/alice.ipynb: alice).

Every notebook runs in a fresh kernel of its own, in an empty temporary folder it alone may write
to (Linux Landlock), with time, memory and process limits: the instructor's cells, with the
student's solution cells and the hidden tests. A test cell scores its points if it runs without an
exception. Writes OUT/gradebook.csv (student, assignment, one column per exercise, total, max,
notes) and OUT/feedback/STUDENT.md.

examples:
  bertlab grade submissions/ --solutions solutions/ --out grades/
  bertlab grade submissions/ --solutions solutions/03_attention.ipynb --out grades/ --jobs 2
"""


def add_grade(commands) -> None:
    p = commands.add_parser("grade", help="grade student notebooks", description=GRADE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=grade)
    defaults = Limits()
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="a submitted notebook or a folder of them")
    p.add_argument("--solutions", required=True,
                   help="the solution notebook, or a folder of them (one per assignment)")
    p.add_argument("--out", required=True, help="where to write gradebook.csv and feedback/")
    p.add_argument("--jobs", type=int, default=1,
                   help="notebooks graded at once, each in its own kernel (%(default)s)")
    p.add_argument("--cell-timeout", type=float, default=defaults.cell_seconds,
                   help="seconds a cell may run (%(default)s)")
    p.add_argument("--notebook-timeout", type=float, default=defaults.notebook_seconds,
                   help="seconds all of a notebook's cells may run together (%(default)s)")
    p.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                   help="address space of a kernel, in MiB (%(default)s)")


def grade(args) -> int:
    from . import grading  # like authoring: only this command needs it

    limits = Limits(cell_seconds=args.cell_timeout, notebook_seconds=args.notebook_timeout,
                    memory_mb=args.memory_mb)
    results = grading.grade([Path(p) for p in args.submissions], Path(args.solutions),
                            Path(args.out), jobs=args.jobs, limits=limits)
    print(f"graded {len(results)} notebooks: {Path(args.out) / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
