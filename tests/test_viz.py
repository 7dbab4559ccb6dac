"""bertlab.viz: every figure shows exactly the numbers it is given (with a colour bar, at 100 dpi
or more), the neuron view computes what the real model computes, the front-end views send the
browser exactly those numbers and carry a stable static fallback, and bad input is refused.
What the views do in a browser is tests/test_browser.py's part."""

import base64
import json

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
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


def colour_bars(fig) -> list[str]:
    """The labels of a figure's colour bars (the axes matplotlib's colorbar() adds)."""
    return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes
            if hasattr(ax, "_colorbar")]


def test_heatmap_shows_the_chosen_head(attn):
    fig = viz.attention_heatmap(attn, TOKENS, layer=2, head=1)
    ax, _ = fig.axes
    assert colour_bars(fig) == ["attention weight"] and fig.dpi >= 100
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
    assert len(fig.axes) == H + 1  # the unused cell of the 2 x 3 grid is removed; a colour bar
    assert colour_bars(fig) == ["attention weight"]
    for h, ax in enumerate(fig.axes[:H]):
        np.testing.assert_array_equal(image(ax), attn[1][0, h].numpy())
        assert ax.get_title() == f"head {h}"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == TOKENS


def test_model_view_is_a_layers_by_heads_grid(attn):
    fig = viz.model_view(attn, TOKENS)
    assert len(fig.axes) == L * H + 1 and colour_bars(fig) == ["attention weight"]
    for i, ax in enumerate(fig.axes[:L * H]):
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
        q_ax, k_ax, product_ax, score_ax, softmax_ax = fig.axes[:5]
        assert colour_bars(fig) == ["entries of q and k", "entries of q × k"]
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


def sent(view, name: str, shape) -> np.ndarray:
    """A binary trait as the browser reads it: little-endian float32, row-major."""
    return np.frombuffer(getattr(view, name), dtype="<f4").reshape(shape)


def fallback(view) -> tuple[str, Figure]:
    """A view's output as a notebook stores it: its text/plain, and the figure its PNG shows."""
    data, _ = view._repr_mimebundle_()
    assert set(data) == {"text/plain", "image/png", "application/vnd.jupyter.widget-view+json"}
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    return data["text/plain"], view.static_figure()


def test_weights_views_send_the_weights_once_and_validate_their_settings(attn):
    for view in [viz.attention_heatmap_widget(attn, TOKENS, layer=2, head=1),
                 viz.head_view_widget(attn, TOKENS, layer=2),
                 viz.model_view_widget(attn, TOKENS, layer=2, head=1)]:
        assert view.shape == [L, H, T, T] and view.tokens == TOKENS and view.layer == 2
        np.testing.assert_array_equal(sent(view, "weights", (L, H, T, T)),
                                      torch.cat(attn).numpy())
        with pytest.raises(ValueError, match="layer 3 is out of range"):
            view.layer = L
        with pytest.raises(ValueError, match="head 4 is out of range"):
            view.head = H
    assert view.view == "model" and view.head == 1


def test_heatmap_view_falls_back_to_the_figure_of_its_settings(attn):
    view = viz.attention_heatmap_widget(attn, TOKENS, layer=0, head=2)
    view.layer, view.head = 2, 3  # as a reader's choice in the browser arrives in the kernel
    text, fig = fallback(view)
    assert text == "HeatmapView(layer=2, head=3; 3 layers, 4 heads, 5 tokens)"
    np.testing.assert_array_equal(image(fig.axes[0]), attn[2][0, 3].numpy())


def test_head_view_shows_all_heads_or_the_ones_asked_for(attn):
    view = viz.head_view_widget(attn, TOKENS, layer=1)
    assert view.heads == [0, 1, 2, 3] and view.view == "head"
    text, fig = fallback(view)
    assert text == "HeadView(layer=1, 4 of 4 heads shown; 3 layers, 5 tokens)"
    np.testing.assert_array_equal(image(fig.axes[2]), attn[1][0, 2].numpy())
    view.heads = [3, 1, 1]
    assert view.heads == [1, 3]
    assert viz.head_view_widget(attn, TOKENS, heads=[2]).heads == [2]
    with pytest.raises(ValueError, match="head 9 is out of range"):
        view.heads = [0, 9]


def test_model_view_falls_back_to_the_whole_grid(attn):
    view = viz.model_view_widget(attn, TOKENS, layer=1, head=3)
    text, fig = fallback(view)
    assert text == "ModelView(3 layers x 4 heads, 5 tokens; layer 1, head 3 enlarged)"
    assert len(fig.axes) == L * H + 1


def test_neuron_view_sends_queries_and_keys_and_follows_the_query():
    g = torch.Generator().manual_seed(1)
    queries, keys = (tuple(torch.randn(1, H, T, D, generator=g) for _ in range(L)) for _ in "qk")
    view = viz.neuron_view_widget(queries, keys, TOKENS, layer=1, head=2)
    assert view.view == "neuron" and view.shape == [L, H, T, D] and view.query == 0
    np.testing.assert_array_equal(sent(view, "query_vectors", (L, H, T, D)),
                                  torch.cat(queries).numpy())
    np.testing.assert_array_equal(sent(view, "key_vectors", (L, H, T, D)), torch.cat(keys).numpy())
    view.query = 3  # what a click on "ran" in the browser does
    expected = viz.neuron_terms(queries, keys, 1, 2, 3)
    torch.testing.assert_close(view.terms().weights, expected.weights)
    text, fig = fallback(view)
    assert text == "NeuronView(layer=1, head=2, query=3 'ran'; 3 layers, 4 heads, 5 tokens, d=8)"
    np.testing.assert_allclose(image(fig.axes[4])[:, 0], expected.weights.numpy())
    with pytest.raises(ValueError, match="query 5 is out of range: there are 5 queries"):
        view.query = T


def test_the_views_javascript_and_css_ship_in_the_package():
    """anywidget reads them from bertlab/viz_static; pyproject.toml's package-data ships them."""
    for name in ("attention_views.js", "attention_views.css"):
        assert (viz.STATIC / name).is_file()
    view = viz.head_view_widget(torch.rand(2, 3, 3), ["a", "b", "c"])
    assert "export default { render }" in view._esm and "https://" not in view._esm
    assert ".bl-view" in view._css


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
    ("no/such/run", "no metrics at no/such/run"),
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


def test_the_architecture_figure_draws_each_tokens_three_embeddings_and_names_every_part():
    fig = viz.architecture(("[CLS]", "a", "[SEP]", "b", "[SEP]"), num_layers=6)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert [t for t in texts if t in ("[CLS]", "a", "[SEP]", "b")] == ["[CLS]", "a", "[SEP]", "b",
                                                                      "[SEP]"]
    assert [t for t in texts if t in ("E_A", "E_B")] == ["E_A"] * 3 + ["E_B"] * 2  # A up to [SEP]
    assert [t for t in texts if t.startswith("h_")] == [f"h_{i}" for i in range(5)]
    for part in ("× 6", "multi-head self-attention", "feed-forward", "MLM", "pooler"):
        assert any(part in t for t in texts), part
