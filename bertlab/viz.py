"""Pictures of attention and of training: matplotlib figures, and front-end views that redraw in
the browser.

Every figure is a function that returns a matplotlib `Figure`, closed to pyplot: it is shown once,
by being a cell's last value or by `display(fig)`, and nothing is left open.

The attention views also come as widgets (`neuron_view_widget`, `head_view_widget`,
`model_view_widget`, `attention_heatmap_widget`), built with anywidget: the numbers (tokens,
weights, queries, keys) go to the browser once, as float32 bytes, and a change of layer, head or
query token is drawn there by `viz_static/attention_views.js`, a plain ES module shipped inside
the package (nothing fetched from a CDN, works offline). Hover a token in the head view to see
its lines; click a token in the neuron view to make it the query; click a head in the model view
to see it large. Each widget's output also holds the matching matplotlib figure as a PNG and a
short, stable text/plain, so nbconvert and GitHub show the picture and nbval compares the text.

Attention inputs (`attn`) come as a model returns them, `model(ids, output_attentions=True)
.attentions`: a tuple with one (1, H, T, T) tensor per layer (or (H, T, T) per layer), for ONE
sequence. A single (H, T, T) tensor is one layer, a single (T, T) tensor one head. Queries and
keys (from `queries_keys`) come in the same shape with D = head size in place of the last T.
The front-end views are made for sentences, up to a few dozen tokens.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import anywidget
import matplotlib.pyplot as plt
import numpy as np
import torch
import traitlets
from matplotlib.figure import Figure

from .attention import MultiHeadSelfAttention
from .training import metric_rows

DPI = 100
WEIGHTS_CMAP = "Blues"  # attention weights: 0 (white) to 1 (dark blue)
VECTOR_CMAP = "RdBu_r"  # vector entries: negative blue, positive red, 0 white
STATIC = Path(__file__).parent / "viz_static"  # the views' JavaScript and CSS


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
        kinds = "queries" if kind == "query" else f"{kind}s"
        raise ValueError(f"{kind} {index} is out of range: there are {count} {kinds}, "
                         f"0 to {count - 1}")
    return index


# ----------------------------------------------------------------------------- attention views

def new_figure(width: float, height: float) -> Figure:
    """Made by pyplot, so that Jupyter's inline backend is set up to show it, then closed, so that
    pyplot does not show it a second time at the end of the cell."""
    fig = plt.figure(figsize=(width, height), dpi=DPI, layout="constrained")
    plt.close(fig)
    return fig


def draw_weights(ax, weights: torch.Tensor, tokens: list[str] | None, fontsize: float = 10):
    """A (T, T) weight matrix as an image with 0..1 colors; tokens on both axes if given.
    Returns the image, for a colour bar."""
    image = ax.imshow(weights.numpy(), cmap=WEIGHTS_CMAP, vmin=0.0, vmax=1.0)
    if tokens is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=fontsize)
    return image


def weights_colorbar(fig, image, ax, **kwargs) -> None:
    """The 0..1 colour bar of attention weights beside `ax` (one axes or a list of them)."""
    bar = fig.colorbar(image, ax=ax, label="attention weight", **kwargs)
    bar.ax.tick_params(labelsize=9)


def attention_heatmap(attn, tokens, layer: int = 0, head: int = 0, ax=None) -> Figure:
    """One head's attention as a T x T grid: row = query token, column = key token, with a colour
    bar. Draws into `ax` if given (end the cell with plt.show() then), else into a new Figure."""
    attn = per_layer(attn)  # (L, H, T, T)
    tokens = check_tokens(tokens, attn.size(-1))
    layer, head = check_index("layer", layer, attn.size(0)), check_index("head", head, attn.size(1))
    weights = attn[layer, head]  # (T, T)
    if ax is None:
        size = 2.0 + 0.3 * len(tokens)
        ax = new_figure(size + 1.0, size).add_subplot()
    image = draw_weights(ax, weights, tokens)
    weights_colorbar(ax.figure, image, ax, shrink=0.8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"layer {layer}, head {head}")
    return ax.figure


def head_view(attn, tokens, layer: int = 0, ncols: int = 4) -> Figure:
    """All heads of one layer side by side, tokens on the outer axes, one colour bar."""
    attn = per_layer(attn)  # (L, H, T, T)
    tokens = check_tokens(tokens, attn.size(-1))
    heads = attn[check_index("layer", layer, attn.size(0))]  # (H, T, T)
    ncols = min(ncols, len(heads))
    nrows = -(-len(heads) // ncols)
    size = 1.0 + 0.13 * len(tokens)  # inches per head
    fig = new_figure(size * ncols + 1.2, size * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).flat
    shown = []
    for h, ax in enumerate(axes):
        if h >= len(heads):
            ax.remove()
            continue
        image = draw_weights(ax, heads[h], tokens, fontsize=9)
        ax.set_title(f"head {h}", fontsize=10)
        ax.label_outer()
        shown.append(ax)
    weights_colorbar(fig, image, shown, shrink=0.5)
    fig.suptitle(f"layer {layer}: every head's attention (row = query, column = key)")
    return fig


def model_view(attn, tokens) -> Figure:
    """Every head of every layer as a small grid: rows = layers, columns = heads."""
    attn = per_layer(attn)  # (L, H, T, T)
    check_tokens(tokens, attn.size(-1))
    L, H = attn.shape[:2]
    fig = new_figure(0.9 * H + 1.6, 0.9 * L + 0.7)
    axes = fig.subplots(L, H, squeeze=False)
    for (layer, head), ax in np.ndenumerate(axes):
        image = draw_weights(ax, attn[layer, head], None)
        if layer == 0:
            ax.set_title(f"head {head}", fontsize=10)
        if head == 0:
            ax.set_ylabel(f"layer {layer}", fontsize=10)
    weights_colorbar(fig, image, axes.ravel().tolist(), shrink=0.8, aspect=30)
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


def draw_vectors(ax, rows: torch.Tensor, title: str, limit: float):
    """Rows of vector entries as colored strips, 0 in white, from -limit to +limit."""
    image = ax.imshow(rows.numpy(), cmap=VECTOR_CMAP, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    return image


def draw_numbers(ax, values: torch.Tensor, title: str, cmap: str, vmin: float, vmax: float):
    """A column of numbers as colored cells with the value written in each."""
    cells = ax.imshow(values[:, None].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for j, v in enumerate(values.tolist()):
        dark = abs(cells.norm(v) - (0.5 if vmin < 0 else 0.0)) > 0.3  # far from the light end
        ax.text(0, j, f"{v:.2f}", ha="center", va="center", fontsize=9,
                color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def neuron_view(queries, keys, tokens, layer: int = 0, head: int = 0, query: int = 0) -> Figure:
    """How one query token's attention is computed: its query vector q (top), every key k,
    the products q * k, their scaled sums q . k / sqrt(d), and the softmax of those. q and k share
    one colour scale, q * k has its own; both have a colour bar."""
    terms = neuron_terms(queries, keys, layer, head, query)
    tokens = check_tokens(tokens, len(terms.keys))
    fig = new_figure(10, 2.2 + 0.28 * len(tokens))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, len(tokens)], width_ratios=[6, 6, 1.3, 1.3])
    limit = max(terms.query.abs().max().item(), terms.keys.abs().max().item()) or 1.0
    q_ax = fig.add_subplot(grid[0, 0])
    draw_vectors(q_ax, terms.query[None], f"query q: {tokens[query]!r}", limit)
    q_ax.set_yticks([])
    k_ax = fig.add_subplot(grid[1, 0])
    vectors = draw_vectors(k_ax, terms.keys, "keys k", limit)
    k_ax.set_yticks(range(len(tokens)), tokens, fontsize=10)
    product_ax = fig.add_subplot(grid[1, 1], sharey=k_ax)
    product_limit = terms.products.abs().max().item() or 1.0
    products = draw_vectors(product_ax, terms.products, "q × k (elementwise)", product_limit)
    product_ax.tick_params(labelleft=False)
    score_limit = terms.scores.abs().max().item() or 1.0
    draw_numbers(fig.add_subplot(grid[1, 2]), terms.scores, "q·k/√d", VECTOR_CMAP, -score_limit,
                 score_limit)
    draw_numbers(fig.add_subplot(grid[1, 3]), terms.weights, "softmax", WEIGHTS_CMAP, 0.0, 1.0)
    for image, ax, label in [(vectors, k_ax, "entries of q and k"),
                             (products, product_ax, "entries of q × k")]:
        bar = fig.colorbar(image, ax=ax, location="bottom", shrink=0.8, aspect=40, label=label)
        bar.ax.tick_params(labelsize=9)
    fig.suptitle(f"layer {layer}, head {head}: how {tokens[query]!r} attends")
    return fig


# ----------------------------------------------------------------------------- front-end views

def float32_bytes(values: torch.Tensor) -> bytes:
    """A tensor as little-endian float32 bytes, row-major: what the browser reads as a
    Float32Array."""
    return values.contiguous().numpy().astype("<f4").tobytes()


def png_base64(fig: Figure) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")
    return base64.b64encode(png.getvalue()).decode()


class AttentionView(anywidget.AnyWidget):
    """What the four front-end views share: one JavaScript module and one style sheet from
    `viz_static/`, the tokens, the shape (L, H, T, X) of the numbers sent, and a static fallback.

    A view's output holds three things: the widget (drawn by the browser when a kernel or the
    notebook's saved widget state is there), a PNG of `static_figure()` for nbconvert and GitHub,
    and a short text/plain that depends only on the view's settings, for nbval."""

    _esm = STATIC / "attention_views.js"
    _css = STATIC / "attention_views.css"
    view = traitlets.Unicode().tag(sync=True)  # which renderer of attention_views.js draws it
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    shape = traitlets.List(traitlets.Int()).tag(sync=True)  # (L, H, T, T) or (L, H, T, D)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)

    def _index(self, kind: str, value: int, axis: int) -> int:
        return check_index(kind, value, self.shape[axis]) if self.shape else value

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        return self._index("layer", proposal["value"], 0)

    @traitlets.validate("head")
    def _check_head(self, proposal):
        return self._index("head", proposal["value"], 1)

    def static_figure(self) -> Figure:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["image/png"] = png_base64(self.static_figure())
        return data, metadata


class WeightsView(AttentionView):
    """A view of a model's attention weights, (L, H, T, T), with a chosen layer and head."""

    weights = traitlets.Bytes().tag(sync=True)  # float32, (L, H, T, T) row-major

    def __init__(self, attn, tokens, **settings):
        self.attn = per_layer(attn)  # (L, H, T, T), kept for the static figure
        super().__init__(tokens=check_tokens(tokens, self.attn.size(-1)),
                         shape=list(self.attn.shape), weights=float32_bytes(self.attn), **settings)


class HeatmapView(WeightsView):
    """`attention_heatmap` with layer and head menus; hover a cell to read its weight."""

    view = traitlets.Unicode("heatmap").tag(sync=True)

    def static_figure(self) -> Figure:
        return attention_heatmap(tuple(self.attn), self.tokens, self.layer, self.head)

    def __repr__(self) -> str:
        L, H, T, _ = self.shape
        return (f"HeatmapView(layer={self.layer}, head={self.head}; {L} layers, {H} heads, "
                f"{T} tokens)")


class HeadView(WeightsView):
    """One layer's heads as lines from each query token (left) to the keys (right), one colour
    per head, a line's opacity its weight. Hover a token to see only its lines; click a head's
    swatch to show or hide it (double-click: that head alone). `heads` lists the heads shown."""

    view = traitlets.Unicode("head").tag(sync=True)
    heads = traitlets.List(traitlets.Int()).tag(sync=True)

    def __init__(self, attn, tokens, heads=None, **settings):
        attn = per_layer(attn)  # (L, H, T, T)
        heads = range(attn.size(1)) if heads is None else heads
        super().__init__(tuple(attn), tokens, heads=list(heads), **settings)

    @traitlets.validate("heads")
    def _check_heads(self, proposal):
        return sorted({self._index("head", h, 1) for h in proposal["value"]})

    def static_figure(self) -> Figure:
        return head_view(tuple(self.attn), self.tokens, self.layer)

    def __repr__(self) -> str:
        L, H, T, _ = self.shape
        return (f"HeadView(layer={self.layer}, {len(self.heads)} of {H} heads shown; "
                f"{L} layers, {T} tokens)")


class ModelView(WeightsView):
    """Every head of every layer as a small heatmap; click one (or set `layer` and `head`) to
    see it large beside the grid, with its tokens."""

    view = traitlets.Unicode("model").tag(sync=True)

    def static_figure(self) -> Figure:
        return model_view(tuple(self.attn), self.tokens)

    def __repr__(self) -> str:
        L, H, T, _ = self.shape
        return (f"ModelView({L} layers x {H} heads, {T} tokens; "
                f"layer {self.layer}, head {self.head} enlarged)")


class NeuronView(AttentionView):
    """`neuron_view` drawn in the browser: layer and head menus, and a click on a token makes it
    the query. The browser computes q × k, q·k/√d and the softmax from the queries and keys it is
    sent (float32); `terms()` gives the same numbers from the kernel."""

    view = traitlets.Unicode("neuron").tag(sync=True)
    # float32, (L, H, T, D) row-major ("keys" is taken: ipywidgets lists a widget's traits in it)
    query_vectors = traitlets.Bytes().tag(sync=True)
    key_vectors = traitlets.Bytes().tag(sync=True)
    query = traitlets.Int(0).tag(sync=True)

    def __init__(self, queries, keys, tokens, **settings):
        self.q, self.k = stack_queries_keys(queries, keys)  # (L, H, T, D) each
        super().__init__(tokens=check_tokens(tokens, self.q.size(2)), shape=list(self.q.shape),
                         query_vectors=float32_bytes(self.q), key_vectors=float32_bytes(self.k),
                         **settings)

    @traitlets.validate("query")
    def _check_query(self, proposal):
        return self._index("query", proposal["value"], 2)

    def terms(self) -> NeuronTerms:
        """The numbers the view shows now, computed by `neuron_terms`."""
        return neuron_terms(tuple(self.q), tuple(self.k), self.layer, self.head, self.query)

    def static_figure(self) -> Figure:
        return neuron_view(tuple(self.q), tuple(self.k), self.tokens, self.layer, self.head,
                           self.query)

    def __repr__(self) -> str:
        L, H, T, D = self.shape
        return (f"NeuronView(layer={self.layer}, head={self.head}, query={self.query} "
                f"{self.tokens[self.query]!r}; {L} layers, {H} heads, {T} tokens, d={D})")


def attention_heatmap_widget(attn, tokens, layer: int = 0, head: int = 0) -> HeatmapView:
    """`attention_heatmap` in the browser, with layer and head menus."""
    return HeatmapView(attn, tokens, layer=layer, head=head)


def head_view_widget(attn, tokens, layer: int = 0, heads=None) -> HeadView:
    """The head view of `layer` (all heads shown unless `heads` lists some)."""
    return HeadView(attn, tokens, heads, layer=layer)


def model_view_widget(attn, tokens, layer: int = 0, head: int = 0) -> ModelView:
    """Every head of every layer, with `layer`, `head` enlarged."""
    return ModelView(attn, tokens, layer=layer, head=head)


def neuron_view_widget(queries, keys, tokens, layer: int = 0, head: int = 0,
                       query: int = 0) -> NeuronView:
    """The neuron view of one head for one query token; click a token to change the query."""
    return NeuronView(queries, keys, tokens, layer=layer, head=head, query=query)


# ----------------------------------------------------------------------------- the model

def architecture(tokens=("[CLS]", "my", "dog", "[SEP]", "he", "barks", "[SEP]"),
                 num_layers: int = 12) -> Figure:
    """BERT at a glance, bottom to top: the input tokens; token + segment + position embeddings,
    summed; the stack of encoder layers (self-attention, then feed-forward, each with a residual
    and LayerNorm); one output vector per token; the heads that read them."""
    T = len(tokens)
    segments = np.cumsum([0] + [t == "[SEP]" for t in tokens[:-1]]).clip(max=1)
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    ax.set(xlim=(-2.6, T), ylim=(-0.6, 9.4))
    ax.axis("off")

    def box(x, y, w, h, text, color, fontsize=9):
        ax.add_patch(plt.Rectangle((x, y), w, h, facecolor=color, edgecolor="0.3"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)

    for i, token in enumerate(tokens):
        box(i + 0.05, 0, 0.9, 0.6, token, "white")
        for row, (name, color) in enumerate((("E_" + token.strip("[]").lower()[:5], "#fde0c5"),
                                             (f"E_{'AB'[segments[i]]}", "#d6ecd2"),
                                             (f"E_{i}", "#dce6f5"))):
            box(i + 0.05, 1 + row * 0.55, 0.9, 0.5, name, color, fontsize=7)
        box(i + 0.05, 7.2, 0.9, 0.6, f"h_{i}", "#eeeeee", fontsize=8)
    for row, label in enumerate(("token", "segment", "position")):
        ax.text(-0.1, 1.25 + row * 0.55, label, ha="right", va="center", fontsize=8)
    ax.text(-0.1, 3.0, "sum, LayerNorm,\ndropout", ha="right", va="center", fontsize=8)
    box(0.05, 2.8, T - 0.1, 0.4, "+", "white")
    box(0.05, 3.5, T - 0.1, 3.4, "", "#f3eefa")
    box(0.3, 5.5, T - 0.6, 0.9, "feed-forward  C → 4C → C, GELU   (+ residual, LayerNorm)",
        "white")
    box(0.3, 4.0, T - 0.6, 0.9, "multi-head self-attention: every token reads every token   "
        "(+ residual, LayerNorm)", "white")
    ax.text(-0.1, 5.2, f"encoder layer\n× {num_layers}\n(no weights\nshared)", ha="right",
            va="center", fontsize=8)
    heads = [(0, 1, "pooler:\nNSP or\na class"),
             (1, 3, "MLM: the vocabulary at\nthe masked tokens"),
             (4, T - 4, "tags per token, or a\nspan's start and end")]
    for start, width, text in heads:
        box(start + 0.05, 8.3, width - 0.1, 0.9, text, "#fff6bf", fontsize=8 if width > 1 else 7)
    ax.text(-0.1, 8.75, "task heads", ha="right", va="center", fontsize=8)
    ax.set_title("BERT: a Transformer encoder, pretrained (MLM + NSP), then fine-tuned with a "
                 "small head", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- training curves

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
    records = metric_rows(path_or_records)
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
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)  # under the panel, off the curves
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside, off the bars
    return ax.figure
