"""The model card `bertlab pretrain` writes beside the checkpoint: how it was made, how it does.

README.md holds the command, the steps, the wall time, the hardware, the held-out MLM and NSP
accuracy at every evaluation, the training curves (curves.png, from metrics.jsonl) and
fill-in-the-blank answers on lines of the held-out works.
"""

from __future__ import annotations

import platform
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .model import BertForPreTraining
from .viz import metric_records, plot_metrics

WORD = re.compile(r"[a-z]+")


@dataclass
class Blank:
    """One held-out line with one word masked, and the model's likeliest fillers."""
    line: str  # with the word replaced by [MASK]
    answer: str
    guesses: list[tuple[str, float]]  # (token, probability), likeliest first


@torch.no_grad()
def fill_mask(model: BertForPreTraining, tokenizer: Tokenizer, text: str,
              k: int = 5) -> list[tuple[str, float]]:
    """The k likeliest tokens for the single [MASK] in `text`, with their probabilities."""
    encoding = tokenizer.encode(text)
    mask_id = tokenizer.token_to_id("[MASK]")
    if encoding.ids.count(mask_id) != 1:
        raise ValueError(f"the text needs exactly one [MASK], got {encoding.ids.count(mask_id)}: "
                         f"{text!r}")
    model.eval()
    device = next(model.parameters()).device
    input_ids = torch.tensor([encoding.ids], device=device)  # (1, T)
    labels = torch.full_like(input_ids, -100)
    labels[input_ids == mask_id] = 0  # any label: it only tells the head where to decode
    logits = model(input_ids, mlm_labels=labels).mlm_logits  # (1, V)
    probs, ids = logits.float().softmax(-1)[0].topk(k)
    return [(tokenizer.id_to_token(i), round(p, 4)) for i, p in zip(ids.tolist(), probs.tolist())]


def blanks(model: BertForPreTraining, tokenizer: Tokenizer, lines: list[str], count: int = 8,
           seed: int = 0) -> list[Blank]:
    """`count` lines drawn by `seed` (among those that fit the model), each with one word of a
    single WordPiece (and at least three letters) replaced by [MASK], and the model's five
    likeliest fillers."""
    rng = random.Random(seed)
    vocab = tokenizer.get_vocab()
    result = []
    for line in rng.sample(lines, len(lines)):
        candidates = [m for m in WORD.finditer(line.lower()) if len(m[0]) >= 3 and m[0] in vocab]
        if not candidates or len(tokenizer.encode(line)) > model.config.max_position_embeddings:
            continue
        word = rng.choice(candidates)
        masked = line[:word.start()] + "[MASK]" + line[word.end():]
        result.append(Blank(masked, word[0], fill_mask(model, tokenizer, masked)))
        if len(result) == count:
            break
    return result


def hardware(device: torch.device) -> str:
    """The processor (or GPU) the run used, and torch's thread count on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = f"{names[0]} ({len(names)} logical cores)" if names else cpu
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def write_model_card(out: Path, runs: list[dict], device: torch.device, held_out: list[str],
                     examples: str, blank_list: list[Blank]) -> None:
    """README.md and curves.png in the run directory `out`, from the runs that made the model
    ({"command", "steps", "wall_seconds"}, first to last: see `bertlab.cli.made_by`), the last
    run's log (out/metrics.jsonl) and the fill-in-the-blanks."""
    history = metric_records(out)
    plot_metrics(history, smooth=20).savefig(out / "curves.png", dpi=80)
    commands = ", then\n  ".join(
        f"`{r['command']}` ({r['steps']:,} steps, {r['wall_seconds'] / 60:.1f} minutes)"
        for r in runs)
    earlier = ("" if len(runs) == 1 else
               " Each run after the first starts from the one before (`--init`); the log, curves "
               f"and held-out scores below are the last run's ({runs[-1]['steps']:,} steps).")
    steps = sum(r["steps"] for r in runs)
    minutes = sum(r["wall_seconds"] for r in runs) / 60
    evals = [row for row in history if row["split"] == "eval"]
    table = "\n".join(f"| {r['step']} | {r['mlm_acc']:.1%} | {r['nsp_acc']:.1%} | {r['loss']:.3f} |"
                      for r in evals)
    answers = "\n".join(
        f"| {b.line} | {b.answer} | " + ", ".join(f"`{t}` {p:.0%}" for t, p in b.guesses) + " |"
        for b in blank_list)
    text = f"""# {out.name}

A small BERT pretrained with masked language modelling and next-sentence prediction on the
course's Shakespeare corpus by `bertlab pretrain`, with its own WordPiece vocabulary.

- Command: {commands}
- Steps: {steps:,}; wall time: {minutes:.1f} minutes (data, tokenizer, training, evaluations and
  checkpoints); hardware: {hardware(device)}; torch {torch.__version__}.{earlier}
- Training data: {examples}.
- Held out of pretraining (and of the tokenizer): {", ".join(held_out) or "nothing"}.

## Held-out accuracy

Sentence pairs cut from the held-out works and masked once (15%, 80/10/10). MLM accuracy: how
often the model's top prediction is the original token at a masked position; NSP accuracy: how
often it tells IsNext from NotNext (about half each; chance is 50%). Both are means over batches
of the training batch size, weighted by pairs. Loss: MLM + NSP.

| step | MLM accuracy | NSP accuracy | loss |
|---:|---:|---:|---:|
{table}

## Training curves

![training curves](curves.png)

## Fill in the blank, on held-out lines

Five likeliest WordPieces for the masked word, with their probabilities.

| line | answer | guesses |
|---|---|---|
{answers}
"""
    (out / "README.md").write_text(text, encoding="utf-8")
