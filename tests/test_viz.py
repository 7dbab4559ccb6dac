"""bertlab.viz: every figure shows exactly the numbers it is given, the neuron view computes what
the real model computes, widgets redraw when a control changes, and bad input is refused."""

import json

import matplotlib
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

import bertlab
from bertlab import viz

matplotlib.use("Agg")

L, H, T, D = 3, 4, 5, 8
TOKENS = ["[CLS]", "the", "dog", "ran", "[SEP]"]


@pytest.fixture(scope="module")
def attn():
    """Random attention as a model returns it: one (1, H, T, T) tensor per layer."""
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, H, T, T, generator=g).softmax(-1) for _ in range(L))


@pytest.fixture(scope="module")
def minilm():
    """The real all-MiniLM-L6-v2 in our BertModel, and the chapter's sentence."""
    model = bertlab.BertModel.from_pretrained(bertlab.minilm_path()).eval()
    tokenizer = Tokenizer.from_file(str(bertlab.minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()
    encoding = tokenizer.encode("The dog from down the street ran up to me and [MASK].")
    return model, torch.tensor([encoding.ids]), encoding.tokens


def image(ax):
    return np.asarray(ax.images[0].get_array())


def test_heatmap_shows_the_chosen_head(attn):
    fig = viz.attention_heatmap(attn, TOKENS, layer=2, head=1)
    (ax,) = fig.axes
    assert len(ax.images) == 1
    np.testing.assert_array_equal(image(ax), attn[2][0, 1].numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS


def test_heatmap_accepts_each_documented_input(attn):
    one_layer = attn[1][0]  # (H, T, T)
    for given, layer, head in [(attn, 1, 3), ([a[0] for a in attn], 1, 3), (one_layer, 0, 3),
                               (one_layer[3], 0, 0)]:
        fig = viz.attention_heatmap(given, TOKENS, layer=layer, head=head)
        np.testing.assert_array_equal(image(fig.axes[0]), attn[1][0, 3].numpy())


def test_heatmap_draws_into_given_axes(attn):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    assert viz.attention_heatmap(attn, TOKENS, 0, 2, ax=right) is fig
    assert not left.images and len(right.images) == 1
    plt.close(fig)


def test_head_view_has_one_panel_per_head(attn):
    fig = viz.head_view(attn, TOKENS, layer=1, ncols=3)
    assert len(fig.axes) == H  # the unused cell of the 2 x 3 grid is removed
    for h, ax in enumerate(fig.axes):
        np.testing.assert_array_equal(image(ax), attn[1][0, h].numpy())
        assert ax.get_title() == f"head {h}"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == TOKENS


def test_model_view_is_a_layers_by_heads_grid(attn):
    fig = viz.model_view(attn, TOKENS)
    assert len(fig.axes) == L * H
    for i, ax in enumerate(fig.axes):
        np.testing.assert_array_equal(image(ax), attn[i // H][0, i % H].numpy())


def test_neuron_view_computes_what_minilm_computes(minilm):
    model, ids, tokens = minilm
    queries, keys = viz.queries_keys(model, ids)
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    assert len(queries) == len(keys) == 6 and queries[0].shape == (1, 12, len(tokens), 32)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed afterwards
    for layer, head, query in [(0, 0, 0), (2, 10, tokens.index("ran")), (5, 11, 12)]:
        q, k = queries[layer], keys[layer]  # (1, H, T, D)
        _, weights = bertlab.scaled_dot_product_attention(q, k, k)  # weights do not need v
        terms = viz.neuron_terms(queries, keys, layer, head, query)
        torch.testing.assert_close(terms.scores, (q[0, head, query] @ k[0, head].T) / 32**0.5)
        torch.testing.assert_close(terms.weights, weights[0, head, query])
        torch.testing.assert_close(terms.weights, attentions[layer][0, head, query])
        torch.testing.assert_close(terms.products.sum(-1) / 32**0.5, terms.scores)

        fig = viz.neuron_view(queries, keys, tokens, layer, head, query)
        q_ax, k_ax, product_ax, score_ax, softmax_ax = fig.axes
        np.testing.assert_allclose(image(q_ax), terms.query[None].numpy())
        np.testing.assert_allclose(image(k_ax), terms.keys.numpy())
        np.testing.assert_allclose(image(product_ax), terms.products.numpy())
        np.testing.assert_allclose(image(score_ax)[:, 0], terms.scores.numpy())
        np.testing.assert_allclose(image(softmax_ax)[:, 0], terms.weights.numpy())
        assert [t.get_text() for t in softmax_ax.texts] == [f"{w:.2f}" for w in terms.weights]
        assert [t.get_text() for t in k_ax.get_yticklabels()] == tokens


def test_queries_keys_refuses_a_model_in_training_mode(minilm):
    model, ids, _ = minilm
    with pytest.raises(ValueError, match="eval"):
        viz.queries_keys(model.train(), ids)
    model.eval()


def shown_png(output) -> str:
    """The picture an Output widget holds (base64 PNG), as the browser receives it."""
    (shown,) = output.outputs
    return shown["data"]["image/png"]


def test_heatmap_widget_redraws_when_a_slider_moves(attn):
    widget = viz.attention_heatmap_widget(attn, TOKENS)
    layer, head, output = widget.children
    np.testing.assert_array_equal(image(widget.figure.axes[0]), attn[0][0, 0].numpy())
    before = shown_png(output)
    layer.value = 2
    np.testing.assert_array_equal(image(widget.figure.axes[0]), attn[2][0, 0].numpy())
    assert shown_png(output) != before
    head.value = 3
    np.testing.assert_array_equal(image(widget.figure.axes[0]), attn[2][0, 3].numpy())
    # what nbval compares is the widget's text/plain: its controls, nothing that varies by run
    text = widget._repr_mimebundle_()["text/plain"]
    assert text.startswith("FigureWidget(children=(IntSlider(value=2,") and len(text) < 120


def test_head_view_widget_redraws_when_the_layer_changes(attn):
    widget = viz.head_view_widget(attn, TOKENS, layer=1)
    np.testing.assert_array_equal(image(widget.figure.axes[2]), attn[1][0, 2].numpy())
    widget.children[0].value = 0
    np.testing.assert_array_equal(image(widget.figure.axes[2]), attn[0][0, 2].numpy())


def test_neuron_widget_redraws_when_the_query_token_changes():
    g = torch.Generator().manual_seed(1)
    queries, keys = (tuple(torch.randn(1, H, T, D, generator=g) for _ in range(L)) for _ in "qk")
    widget = viz.neuron_view_widget(queries, keys, TOKENS, layer=1, head=2)
    layer, head, query, output = widget.children
    assert query.options[3] == ("3: ran", 3)
    before = shown_png(output)
    query.value = 3
    assert shown_png(output) != before
    softmax = image(widget.figure.axes[4])[:, 0]
    np.testing.assert_allclose(softmax, viz.neuron_terms(queries, keys, 1, 2, 3).weights.numpy())
    head.value = 0
    np.testing.assert_allclose(image(widget.figure.axes[0])[0],
                               viz.neuron_terms(queries, keys, 1, 0, 3).query.numpy())


@pytest.mark.parametrize("call, message", [
    (lambda a: viz.attention_heatmap(a, TOKENS, layer=L), "layer 3 is out of range"),
    (lambda a: viz.attention_heatmap(a, TOKENS, head=-1), "head -1 is out of range"),
    (lambda a: viz.attention_heatmap(a, TOKENS[:-1]), "4 tokens for a sequence of 5"),
    (lambda a: viz.head_view(a, TOKENS, layer=7), "layer 7 is out of range"),
    (lambda a: viz.model_view(a, TOKENS + ["x"]), "6 tokens"),
    (lambda a: viz.attention_heatmap_widget(a, TOKENS, layer=L), "layer 3 is out of range"),
    (lambda a: viz.head_view_widget(a, TOKENS[1:]), "4 tokens"),
    (lambda a: viz.attention_heatmap(None, TOKENS), "output_attentions=True"),
    (lambda a: viz.attention_heatmap(torch.cat(a), TOKENS), "single tensor"),
    (lambda a: viz.attention_heatmap([torch.cat([t, t]) for t in a], TOKENS), "batch of 2"),
    (lambda a: viz.neuron_view(a, a[:2], TOKENS), "differ"),
    (lambda a: viz.neuron_view_widget(a, a, TOKENS, query=T), "query 5 is out of range"),
])
def test_bad_input_is_a_clear_value_error(attn, call, message):
    with pytest.raises(ValueError, match=message):
        call(attn)


RECORDS = [
    {"step": 1, "split": "train", "loss": 6.0, "mlm_acc": 0.05, "lr": 1e-4},
    {"step": 2, "split": "train", "loss": 5.0, "mlm_acc": 0.10, "lr": 2e-4},
    {"step": 3, "split": "train", "loss": 4.0, "mlm_acc": 0.15, "lr": 1e-4},
    {"step": 3, "split": "eval", "loss": 4.5, "mlm_acc": 0.12, "nsp_acc": 0.5},
]


def test_plot_metrics_reads_a_runs_jsonl(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    fig = viz.plot_metrics(tmp_path, smooth=2)
    loss_ax, acc_ax, lr_ax = fig.axes
    train, evaluation = loss_ax.lines
    np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(train.get_ydata(), [6.0, 5.5, 4.5])  # moving average of 2
    np.testing.assert_array_equal(evaluation.get_ydata(), [4.5])
    labels = [line.get_label() for line in acc_ax.lines]
    assert labels == ["mlm_acc (train)", "mlm_acc (eval)", "nsp_acc (eval)"]
    np.testing.assert_allclose(lr_ax.lines[0].get_ydata(), [1e-4, 2e-4, 1e-4])


def test_plot_metrics_draws_only_the_panels_it_has_data_for():
    fig = viz.plot_metrics([{k: r[k] for k in ("step", "split", "loss")} for r in RECORDS])
    assert [ax.get_title() for ax in fig.axes] == ["loss"]


@pytest.mark.parametrize("records, message", [
    ([{"step": 1, "loss": 2.0}], "split"),
    ([], "no metrics"),
    ("no/such/run", "no metrics file"),
])
def test_plot_metrics_refuses_bad_records(records, message):
    with pytest.raises(ValueError, match=message):
        viz.plot_metrics(records)


def test_learning_curve_means_and_spreads_over_seeds():
    table = [{"start": start, "examples": n, "seed": seed, "accuracy": acc + seed * 0.1}
             for start, base in (("pretrained", 0.6), ("scratch", 0.3))
             for n, acc in ((100, base), (1000, base + 0.2)) for seed in (0, 1)]
    fig = viz.learning_curve(table, chance=1 / 3)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    pretrained, scratch = ax.containers  # one errorbar per start
    np.testing.assert_allclose(pretrained.lines[0].get_ydata(), [0.65, 0.85])
    np.testing.assert_allclose(scratch.lines[0].get_xdata(), [100, 1000])
    bar = pretrained.lines[2][0].get_segments()[0]  # the first error bar: mean -+ sample std
    spread = np.std([0.6, 0.7], ddof=1)  # 0.0707, not the population's 0.05
    np.testing.assert_allclose(bar[:, 1], [0.65 - spread, 0.65 + spread])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance", "pretrained",
                                                                   "scratch"]
    with pytest.raises(ValueError, match="seed"):
        viz.learning_curve([{"start": "scratch", "examples": 10, "accuracy": 0.5}])
