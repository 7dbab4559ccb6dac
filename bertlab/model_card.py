"""The model card `bertlab pretrain` writes beside the checkpoint: how it was made, how it does.

README.md holds the command, the steps, the wall time, the hardware, the held-out MLM and NSP
accuracy at every evaluation, the training curves (curves.png, from metrics.jsonl; drawn when
matplotlib is installed) and how well it fills in blanks on lines of the held-out works.
"""

from __future__ import annotations

import platform
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Encoding, Tokenizer

from .model import BertForPreTraining
from .training import metric_rows


@dataclass(frozen=True)
class Blank:
    """A line with one word hidden: the word is one WordPiece of at least three letters
    (shorter ones are often pieces of contractions: *o'er* is `o ' er`)."""

    line: str
    ids: tuple[int, ...]  # the encoded line, [MASK] at `position`
    position: int
    answer: int  # the hidden token
    span: tuple[int, int]  # where the hidden word is in `line`

    @property
    def masked(self) -> str:
        return self.line[:self.span[0]] + "[MASK]" + self.line[self.span[1]:]

    @property
    def word(self) -> str:
        return self.line[self.span[0]:self.span[1]]


def blankable(encoding: Encoding) -> list[int]:
    """Positions of the words of an encoded line that are one WordPiece of 3+ letters."""
    pieces = Counter(w for w in encoding.word_ids if w is not None)
    return [i for i, (w, token) in enumerate(zip(encoding.word_ids, encoding.tokens))
            if w is not None and pieces[w] == 1 and token.isalpha() and len(token) >= 3]


def make_blanks(tokenizer: Tokenizer, lines: list[str], max_len: int, count: int = 200,
                seed: int = 0, min_words: int = 6) -> list[Blank]:
    """Up to `count` lines of at least `min_words` words and at most `max_len` tokens, drawn by
    `seed`, each with one blankable word (drawn too) hidden behind [MASK]."""
    rng = random.Random(seed)
    mask_id = tokenizer.token_to_id("[MASK]")
    candidates = [line for line in lines if len(line.split()) >= min_words]
    found = []
    for line in rng.sample(candidates, len(candidates)):
        encoding = tokenizer.encode(line)
        positions = blankable(encoding)
        if positions and len(encoding.ids) <= max_len:
            i = rng.choice(positions)
            ids = tuple(mask_id if j == i else t for j, t in enumerate(encoding.ids))
            found.append(Blank(line, ids, i, encoding.ids[i], encoding.offsets[i]))
        if len(found) == count:
            break
    return found


@torch.no_grad()
def fill_blanks(model: BertForPreTraining, blanks: list[Blank], pad_id: int, k: int = 5
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's k likeliest tokens at each blank and their probabilities: (B, k) each, on
    the CPU, likeliest first."""
    model.eval()
    device = next(model.parameters()).device
    T = max(len(b.ids) for b in blanks)
    input_ids = torch.tensor([[*b.ids, *[pad_id] * (T - len(b.ids))] for b in blanks])  # (B, T)
    attention_mask = (torch.arange(T) < torch.tensor([len(b.ids) for b in blanks])[:, None])
    logits = model(input_ids.to(device), attention_mask=attention_mask.long().to(device)
                   ).mlm_logits  # (B, T, V)
    positions = torch.tensor([b.position for b in blanks], device=device)  # (B,)
    at_blank = logits[torch.arange(len(blanks), device=device), positions]  # (B, V)
    probs, ids = at_blank.float().softmax(-1).topk(k)  # (B, k) each
    return probs.cpu(), ids.cpu()


def hit_rates(blanks: list[Blank], guesses: torch.Tensor) -> tuple[float, float]:
    """The share of blanks whose hidden word is the first guess, and among all the guesses."""
    truth = torch.tensor([b.answer for b in blanks])  # (B,)
    return ((guesses[:, 0] == truth).float().mean().item(),
            (guesses == truth[:, None]).any(1).float().mean().item())


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


def plot_curves(history: list[dict], path: Path) -> bool:
    """Draw the training curves into `path`; False if matplotlib is not installed."""
    try:
        from .viz import plot_metrics
    except ImportError:
        return False
    plot_metrics(history, smooth=20).savefig(path)  # at the figure's 100 dpi
    return True


def blank_table(model: BertForPreTraining, tokenizer: Tokenizer, lines: list[str],
                shown: int = 8) -> str:
    """The fill-in-the-blank section: hit rates on make_blanks' blanks, and the first few."""
    blanks = make_blanks(tokenizer, lines, model.config.max_position_embeddings)
    if not blanks:
        return "No held-out lines to fill in."
    probs, guesses = fill_blanks(model, blanks, tokenizer.token_to_id("[PAD]"))
    top1, top5 = hit_rates(blanks, guesses)
    rows = "\n".join(
        f"| {b.masked} | {b.word} | " + ", ".join(
            f"`{tokenizer.id_to_token(t)}` {q:.0%}" for t, q in zip(g.tolist(), p.tolist())) + " |"
        for b, p, g in list(zip(blanks, probs, guesses))[:shown])
    return f"""On {len(blanks)} held-out lines of six words or more, one word hidden (a single
WordPiece of three letters or more; `bertlab.model_card.make_blanks`, chapter 7's measure): the
hidden word is the first guess **{top1:.1%}** of the time, among the five likeliest
**{top5:.1%}**. The first {min(shown, len(blanks))}, with the five likeliest WordPieces and their
probabilities:

| line | answer | guesses |
|---|---|---|
{rows}"""


def write_model_card(out: Path, runs: list[dict], device: torch.device, held_out: list[str],
                     examples: str, blanks: str) -> None:
    """README.md and curves.png in the run directory `out`, from the runs that made the model
    ({"command", "steps", "wall_seconds"}, first to last: see `bertlab.pretrain.made_by`), the
    last run's log (out/metrics.jsonl) and the fill-in-the-blank section (`blank_table`)."""
    history = metric_rows(out)
    curves = ("![training curves](curves.png)" if plot_curves(history, out / "curves.png") else
              "(Install the `course` extra, which brings matplotlib, to draw them here.)")
    commands = ", then\n  ".join(
        f"`{r['command']}` ({r['steps']:,} steps, {r['wall_seconds'] / 60:.1f} minutes)"
        for r in runs)
    earlier = ("" if len(runs) == 1 else
               " Each run after the first starts from the one before (`--init`); the log, curves "
               f"and held-out scores below are the last run's ({runs[-1]['steps']:,} steps).")
    steps = sum(r["steps"] for r in runs)
    minutes = sum(r["wall_seconds"] for r in runs) / 60
    evals = [row for row in history if row["split"] == "eval"]
    nsp = all("nsp_acc" in r for r in evals)  # False after --no-nsp
    columns = {"MLM accuracy": "mlm_acc", **({"NSP accuracy": "nsp_acc"} if nsp else {}),
               "loss": "loss"}
    table = "\n".join("| " + " | ".join([str(r["step"])] + [
        f"{r[k]:.3f}" if k == "loss" else f"{r[k]:.1%}" for k in columns.values()]) + " |"
        for r in evals)
    text = f"""# {out.name}

A small BERT pretrained with {"masked language modelling and next-sentence prediction" if nsp
else "masked language modelling alone (`--no-nsp`, as RoBERTa: no next-sentence prediction)"} on
the course's Shakespeare corpus by `bertlab pretrain`, with its own WordPiece vocabulary.

- Command: {commands}
- Steps: {steps:,}; wall time: {minutes:.1f} minutes (data, tokenizer, training, evaluations and
  checkpoints); hardware: {hardware(device)}; torch {torch.__version__}.{earlier}
- Training data: {examples}.
- Held out of pretraining (and of the tokenizer): {", ".join(held_out) or "nothing"}.

## Held-out accuracy

{"Sentence pairs" if nsp else "Chunks"} cut from the held-out works and masked once (15%,
80/10/10). MLM accuracy: how often the model's top prediction is the original token at a masked
position{"; NSP accuracy: how often it tells IsNext from NotNext (about half each; chance is 50%)"
if nsp else ""}. Means over batches of the training batch size, weighted by examples. Loss:
{"MLM + NSP" if nsp else "MLM"}.

| step | {" | ".join(columns)} |
|---:|{"---:|" * len(columns)}
{table}

## Training curves

{curves}

## Fill in the blank, on held-out lines

{blanks}
"""
    (out / "README.md").write_text(text, encoding="utf-8")
