"""Pictures of attention and of training: matplotlib figures, and ipywidgets that redraw them.

Every view is a function that returns a matplotlib `Figure`, closed to pyplot: it is shown once,
by being a cell's last value or by `display(fig)`, and nothing is left open. Each view of
attention also has a `..._widget` twin: controls above an Output that redraws the figure when a
control changes. Only matplotlib and ipywidgets: no JavaScript, nothing fetched from the network.

Attention inputs (`attn`) come as a model returns them, `model(ids, output_attentions=True)
.attentions`: a tuple with one (1, H, T, T) tensor per layer (or (H, T, T) per layer), for ONE
sequence. A single (H, T, T) tensor is one layer, a single (T, T) tensor one head. Queries and
keys (from `queries_keys`) come in the same shape with D = head size in place of the last T.
"""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .attention import MultiHeadSelfAttention

DPI = 80
WEIGHTS_CMAP = "Blues"  # attention weights: 0 (white) to 1 (dark blue)
VECTOR_CMAP = "RdBu_r"  # vector entries: negative blue, positive red, 0 white


# ----------------------------------------------------------------------------- inputs

def per_layer(tensors, name: str = "attn") -> torch.Tensor:
    """One sequence's per-layer tensors -> one (L, H, T, X) float tensor on the CPU.

    tensors: a tuple/list of (1, H, T, X) or (H, T, X) tensors, one per layer; or a single
    (H, T, X) tensor (one layer) or (T, X) tensor (one head of one layer).
    """
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() not in (2, 3):
            raise ValueError(f"{name} as a single tensor must be (H, T, T) or (T, T), got shape "
                             f"{tuple(tensors.shape)}; pass a model's per-layer tuple instead")
        tensors = [tensors.reshape(-1, *tensors.shape[-2:])]  # one layer: (H, T, X)
    if not isinstance(tensors, (tuple, list)) or not tensors or any(
            not isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"{name} must be a tuple of per-layer tensors; did you call the model "
                         "with output_attentions=True?")
    layers = []
    for t in tensors:
        if t.dim() == 4 and t.size(0) != 1:
            raise ValueError(f"{name} holds a batch of {t.size(0)} sequences; views show one: "
                             f"pass [t[i] for t in {name}]")
        if t.dim() not in (3, 4):
            raise ValueError(f"each layer of {name} must be (1, H, T, X) or (H, T, X), got "
                             f"shape {tuple(t.shape)}")
        layers.append(t.reshape(t.shape[-3:]))
    if len({t.shape for t in layers}) > 1:
        raise ValueError(f"the layers of {name} have different shapes: "
                         f"{sorted({tuple(t.shape) for t in layers})}")
    return torch.stack(layers).detach().float().cpu()  # (L, H, T, X)


def check_tokens(tokens, length: int) -> list[str]:
    tokens = list(tokens)
    if len(tokens) != length:
        raise ValueError(f"got {len(tokens)} tokens for a sequence of {length} positions: pass "
                         "the tokens of the sequence the model saw (with [CLS] and [SEP])")
    return [str(t) for t in tokens]


def check_index(kind: str, index: int, count: int) -> int:
    if not 0 <= index < count:
        raise ValueError(f"{kind} {index} is out of range: there are {count} {kind}s, "
                         f"0 to {count - 1}")
    return index


# ----------------------------------------------------------------------------- attention views

def new_figure(width: float, height: float) -> Figure:
    """Made by pyplot, so that Jupyter's inline backend is set up to show it, then closed, so that
    pyplot does not show it a second time at the end of the cell."""
    fig = plt.figure(figsize=(width, height), dpi=DPI, layout="constrained")
    plt.close(fig)
    return fig


def draw_weights(ax, weights: torch.Tensor, tokens: list[str] | None) -> None:
    """A (T, T) weight matrix as an image with 0..1 colors; tokens on both axes if given."""
    ax.imshow(weights.numpy(), cmap=WEIGHTS_CMAP, vmin=0.0, vmax=1.0)
    if tokens is None:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.set_xticks(range(len(tokens)), tokens, rotation=90)
    ax.set_yticks(range(len(tokens)), tokens)


def attention_heatmap(attn, tokens, layer: int = 0, head: int = 0, ax=None) -> Figure:
    """One head's attention as a T x T grid: row = query token, column = key token.

    Draws into `ax` if given (end the cell with plt.show() then), else into a new Figure.
    """
    attn = per_layer(attn)  # (L, H, T, T)
    tokens = check_tokens(tokens, attn.size(-1))
    layer, head = check_index("layer", layer, attn.size(0)), check_index("head", head, attn.size(1))
    weights = attn[layer, head]  # (T, T)
    if ax is None:
        size = 1.5 + 0.3 * len(tokens)
        ax = new_figure(size, size).add_subplot()
    draw_weights(ax, weights, tokens)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"layer {layer}, head {head}")
    return ax.figure


def head_view(attn, tokens, layer: int = 0, ncols: int = 4) -> Figure:
    """All heads of one layer side by side, tokens on the outer axes."""
    attn = per_layer(attn)  # (L, H, T, T)
    tokens = check_tokens(tokens, attn.size(-1))
    heads = attn[check_index("layer", layer, attn.size(0))]  # (H, T, T)
    ncols = min(ncols, len(heads))
    nrows = -(-len(heads) // ncols)
    size = 0.8 + 0.13 * len(tokens)  # inches per head
    fig = new_figure(size * ncols + 1, size * nrows + 1)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).flat
    for h, ax in enumerate(axes):
        if h >= len(heads):
            ax.remove()
            continue
        draw_weights(ax, heads[h], tokens)
        ax.set_title(f"head {h}")
        ax.label_outer()
    fig.suptitle(f"layer {layer}: every head's attention (row = query, column = key)")
    return fig


def model_view(attn, tokens) -> Figure:
    """Every head of every layer as a small grid: rows = layers, columns = heads."""
    attn = per_layer(attn)  # (L, H, T, T)
    check_tokens(tokens, attn.size(-1))
    L, H = attn.shape[:2]
    fig = new_figure(0.8 * H + 0.6, 0.8 * L + 0.6)
    axes = fig.subplots(L, H, squeeze=False)
    for (layer, head), ax in np.ndenumerate(axes):
        draw_weights(ax, attn[layer, head], None)
        if layer == 0:
            ax.set_title(f"head {head}", fontsize=8)
        if head == 0:
            ax.set_ylabel(f"layer {layer}", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- the neuron view

@torch.no_grad()
def queries_keys(model, input_ids, token_type_ids=None, attention_mask=None):
    """Run `model` and catch every layer's queries and keys with forward hooks on
    `attention.self.query` / `.key`. Returns (queries, keys): tuples with one (B, H, T, D)
    tensor per layer, the shape of the model's `attentions`."""
    if model.training:
        raise ValueError("the model is in training mode, so dropout would change what it "
                         "computes: call model.eval() first")
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadSelfAttention)]
    if not attentions:
        raise ValueError(f"{type(model).__name__} has no MultiHeadSelfAttention layers")
    caught = {"query": [], "key": []}
    hooks = [getattr(m, name).register_forward_hook(
                 lambda mod, args, out, m=m, name=name: caught[name].append(m.split_heads(out)))
             for m in attentions for name in caught]
    try:
        model(input_ids, token_type_ids, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
    return tuple(caught["query"]), tuple(caught["key"])


@dataclass
class NeuronTerms:
    """Everything the neuron view draws, for one query token of one head."""
    query: torch.Tensor  # (D,) q_i
    keys: torch.Tensor  # (T, D) k_j for every token j
    products: torch.Tensor  # (T, D) q_i * k_j, elementwise
    scores: torch.Tensor  # (T,) q_i . k_j / sqrt(D): the products summed, then scaled
    weights: torch.Tensor  # (T,) softmax of the scores: how much token i attends to each j


def stack_queries_keys(queries, keys) -> tuple[torch.Tensor, torch.Tensor]:
    """`queries_keys`'s output for one sequence -> two (L, H, T, D) tensors of the same shape."""
    queries, keys = per_layer(queries, "queries"), per_layer(keys, "keys")  # (L, H, T, D)
    if queries.shape != keys.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} differ: "
                         "pass both from the same queries_keys(...) call")
    return queries, keys


def neuron_terms(queries, keys, layer: int = 0, head: int = 0, query: int = 0) -> NeuronTerms:
    """Attention for one query token, step by step (no mask: one sequence without padding)."""
    queries, keys = stack_queries_keys(queries, keys)  # (L, H, T, D)
    L, H, T, D = queries.shape
    layer, head = check_index("layer", layer, L), check_index("head", head, H)
    q, k = queries[layer, head, check_index("query", query, T)], keys[layer, head]  # (D,), (T, D)
    products = q * k  # (T, D)
    scores = products.sum(-1) / D**0.5  # (T,)
    return NeuronTerms(q, k, products, scores, scores.softmax(-1))


def draw_vectors(ax, rows: torch.Tensor, title: str) -> None:
    """Rows of vector entries as colored strips, 0 in white, symmetric around 0."""
    limit = rows.abs().max().item() or 1.0
    ax.imshow(rows.numpy(), cmap=VECTOR_CMAP, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])


def draw_numbers(ax, values: torch.Tensor, title: str, cmap: str, vmin: float, vmax: float):
    """A column of numbers as colored cells with the value written in each."""
    cells = ax.imshow(values[:, None].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for j, v in enumerate(values.tolist()):
        dark = abs(cells.norm(v) - (0.5 if vmin < 0 else 0.0)) > 0.3  # far from the light end
        ax.text(0, j, f"{v:.2f}", ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def neuron_view(queries, keys, tokens, layer: int = 0, head: int = 0, query: int = 0) -> Figure:
    """How one query token's attention is computed: its query vector q (top), every key k,
    the products q * k, their scaled sums q . k / sqrt(d), and the softmax of those."""
    terms = neuron_terms(queries, keys, layer, head, query)
    tokens = check_tokens(tokens, len(terms.keys))
    fig = new_figure(9, 1.2 + 0.28 * len(tokens))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, len(tokens)], width_ratios=[6, 6, 1.2, 1.2])
    q_ax = fig.add_subplot(grid[0, 0])
    draw_vectors(q_ax, terms.query[None], f"query q: {tokens[query]!r}")
    q_ax.set_yticks([])
    k_ax = fig.add_subplot(grid[1, 0])
    draw_vectors(k_ax, terms.keys, "keys k")
    k_ax.set_yticks(range(len(tokens)), tokens)
    product_ax = fig.add_subplot(grid[1, 1], sharey=k_ax)
    draw_vectors(product_ax, terms.products, "q × k (elementwise)")
    product_ax.tick_params(labelleft=False)
    limit = terms.scores.abs().max().item() or 1.0
    draw_numbers(fig.add_subplot(grid[1, 2]), terms.scores, "q·k/√d", VECTOR_CMAP, -limit, limit)
    draw_numbers(fig.add_subplot(grid[1, 3]), terms.weights, "softmax", WEIGHTS_CMAP, 0.0, 1.0)
    fig.suptitle(f"layer {layer}, head {head}: how {tokens[query]!r} attends")
    return fig


# ----------------------------------------------------------------------------- widgets

class FigureWidget(widgets.VBox):
    """Controls above an Output that shows draw(**values), redrawn whenever a control changes;
    `.figure` is the Figure on show. The picture is put into the Output's state instead of being
    displayed from the kernel, so a notebook's cell output is the widget alone, the same on every
    run (nbval compares it), and the picture is saved with the notebook's widget state."""

    def __init__(self, draw, **controls):
        self.draw, self.controls, self.output = draw, controls, widgets.Output()
        super().__init__([*controls.values(), self.output])
        for control in controls.values():
            control.observe(self.redraw, names="value")
        self.redraw()

    def redraw(self, change=None):
        self.figure = self.draw(**{name: c.value for name, c in self.controls.items()})
        png = io.BytesIO()
        self.figure.savefig(png, format="png", bbox_inches="tight")
        data = {"image/png": base64.b64encode(png.getvalue()).decode(),
                "text/plain": repr(self.figure)}
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)


def index_slider(kind: str, count: int, value: int = 0) -> widgets.IntSlider:
    """A slider over 0..count-1 that redraws when released, not at every step while dragged."""
    return widgets.IntSlider(value=check_index(kind, value, count), min=0, max=count - 1,
                             description=kind, continuous_update=False)


def attention_heatmap_widget(attn, tokens, layer: int = 0, head: int = 0) -> FigureWidget:
    """`attention_heatmap` with a layer slider and a head slider."""
    L, H, T, _ = per_layer(attn).shape
    check_tokens(tokens, T)
    return FigureWidget(lambda layer, head: attention_heatmap(attn, tokens, layer, head),
                        layer=index_slider("layer", L, layer), head=index_slider("head", H, head))


def head_view_widget(attn, tokens, layer: int = 0) -> FigureWidget:
    """`head_view` with a layer slider."""
    L, _, T, _ = per_layer(attn).shape
    check_tokens(tokens, T)
    return FigureWidget(lambda layer: head_view(attn, tokens, layer),
                        layer=index_slider("layer", L, layer))


def neuron_view_widget(queries, keys, tokens, layer: int = 0, head: int = 0,
                       query: int = 0) -> FigureWidget:
    """`neuron_view` with layer and head sliders and a query-token dropdown."""
    L, H, T, _ = stack_queries_keys(queries, keys)[0].shape
    tokens = check_tokens(tokens, T)
    choices = widgets.Dropdown(options=[(f"{i}: {t}", i) for i, t in enumerate(tokens)],
                               value=check_index("query", query, T), description="query")

    def draw(layer, head, query):
        return neuron_view(queries, keys, tokens, layer, head, query)

    return FigureWidget(draw, layer=index_slider("layer", L, layer),
                        head=index_slider("head", H, head), query=choices)


# ----------------------------------------------------------------------------- training curves

def metric_records(path_or_records) -> list[dict]:
    """Records from a `metrics.jsonl` file (or the run directory holding it), or a list of dicts.
    Each record needs `step` and `split` ('train' or 'eval')."""
    if isinstance(path_or_records, (str, Path)):
        path = Path(path_or_records)
        path = path / "metrics.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"no metrics file at {path}: pass a run's metrics.jsonl")
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    else:
        records = list(path_or_records)
    for i, r in enumerate(records):
        if "step" not in r or r.get("split") not in ("train", "eval"):
            raise ValueError(f"metrics record {i} ({r}) needs a 'step' and a 'split' of "
                             "'train' or 'eval'")
    if not records:
        raise ValueError("no metrics records to plot")
    return records


def moving_average(values: list[float], window: int) -> np.ndarray:
    """The mean of each value and the window - 1 before it (fewer at the start)."""
    sums = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_metrics(path_or_records, smooth: int = 1) -> Figure:
    """Training curves from a run's metrics: loss; accuracies (`mlm_acc`, `nsp_acc`) and the
    learning rate (`lr`) in panels of their own when the records have them. Train losses and
    accuracies are lines (a moving average over `smooth` records), eval points are dots."""
    if smooth < 1:
        raise ValueError(f"smooth is a number of records to average, at least 1; got {smooth}")
    records = metric_records(path_or_records)
    panels = [("loss", ["loss"]), ("accuracy", ["mlm_acc", "nsp_acc"]), ("learning rate", ["lr"])]
    panels = [(title, keys) for title, keys in panels if any(k in r for r in records for k in keys)]
    fig = new_figure(4 * len(panels), 3)
    for ax, (title, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key in keys:
            for split in ("train", "eval"):
                rows = [r for r in records if r["split"] == split and key in r]
                if not rows:
                    continue
                steps, values = [r["step"] for r in rows], [r[key] for r in rows]
                if split == "train":
                    window = 1 if key == "lr" else smooth
                    ax.plot(steps, moving_average(values, window), label=f"{key} (train)")
                else:
                    ax.plot(steps, values, "o-", label=f"{key} (eval)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    return fig


def learning_curve(table, metric: str = "accuracy", chance: float | None = None) -> Figure:
    """Metric against the number of labelled examples (log scale), one line per starting point
    (e.g. 'pretrained', 'scratch'), mean ± standard deviation over seeds.

    table: dicts (rows) with keys `start`, `examples`, `seed` and `metric`.
    """
    runs = defaultdict(list)  # (start, examples) -> metric for each seed
    for row in table:
        missing = {"start", "examples", "seed", metric} - row.keys()
        if missing:
            raise ValueError(f"learning-curve row {row} lacks {sorted(missing)}")
        runs[row["start"], row["examples"]].append(row[metric])
    if not runs:
        raise ValueError("the learning-curve table is empty")
    ax = new_figure(5, 3.5).add_subplot()
    for start in dict.fromkeys(start for start, _ in runs):
        sizes = np.array(sorted(n for s, n in runs if s == start))
        means = np.array([np.mean(runs[start, n]) for n in sizes])
        spreads = np.array([np.std(runs[start, n], ddof=1) if len(runs[start, n]) > 1 else 0.0
                            for n in sizes])  # the sample standard deviation, as in RESULTS.md
        ax.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3, label=start)
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(metric)
    ax.legend()
    return ax.figure
