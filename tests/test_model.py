"""The model's contracts: attention paths, padding, heads, initialization, errors, checkpoints."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import bertlab
from bertlab import BertConfig
from bertlab.attention import padding_mask

CFG = BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=96, max_position_embeddings=32, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)


def inputs(n=3, t=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG.vocab_size, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def test_sdpa_by_hand():
    """The written-out attention on numbers small enough to check by hand."""
    q = torch.tensor([[1.0, 0.0]])  # one query
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two keys
    v = torch.tensor([[10.0], [20.0]])
    out, w = bertlab.scaled_dot_product_attention(q, k, v)
    p = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)  # softmax([1/√2, 0])
    torch.testing.assert_close(w, torch.tensor([[p, 1 - p]]))
    torch.testing.assert_close(out, torch.tensor([[10 * p + 20 * (1 - p)]]))
    out, w = bertlab.scaled_dot_product_attention(q, k, v, mask=torch.tensor([[False, True]]))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[20.0]]))


@pytest.mark.parametrize("with_mask", [False, True])
def test_explicit_and_fused_attention_agree(with_mask):
    torch.manual_seed(0)
    attn = bertlab.MultiHeadSelfAttention(CFG).eval()
    x = torch.randn(3, 10, CFG.hidden_size)
    mask = padding_mask(inputs()[1]) if with_mask else None
    fused, none = attn(x, mask, output_attentions=False)
    explicit, weights = attn(x, mask, output_attentions=True)
    assert none is None and weights.shape == (3, 4, 10, 10)
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 10))
    if with_mask:
        assert (weights[1, :, :, 6:] == 0).all()  # nobody attends to padding


def test_sdpa_matches_torch():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True
    ours, _ = bertlab.scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask))


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = bertlab.BertModel(CFG).eval()
    ids = inputs(t=6)[0][:1]  # (1, 6)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        alone = model(ids).last_hidden_state
        with_pad = model(padded, attention_mask=mask).last_hidden_state[:, :6]
    torch.testing.assert_close(alone, with_pad, atol=1e-6, rtol=1e-5)


def test_heads_shapes_and_losses():
    torch.manual_seed(0)
    ids, mask = inputs()
    B, T = ids.shape
    seq = bertlab.BertForSequenceClassification(BertConfig(**{**vars(CFG), "num_labels": 3}))
    out = seq(ids, attention_mask=mask, labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (B, 3) and out.loss.ndim == 0
    tok = bertlab.BertForTokenClassification(CFG)
    labels = torch.full((B, T), -100)
    labels[0, 2] = 1
    out = tok(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (B, T, 2)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[0, 2:3],
                                                                           labels[0, 2:3]))
    mc = bertlab.BertForMultipleChoice(CFG)
    out = mc(ids[None].expand(2, B, T), attention_mask=mask[None].expand(2, B, T),
             labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, B) and out.loss.ndim == 0
    qa = bertlab.BertForQuestionAnswering(CFG)
    out = qa(ids, attention_mask=mask, start_positions=torch.tensor([1, 2, 3]),
             end_positions=torch.tensor([2, 2, 4]))
    assert out.start_logits.shape == out.end_logits.shape == (B, T) and out.loss.ndim == 0
    mlm = bertlab.BertForMaskedLM(CFG)
    assert mlm(ids).logits.shape == (B, T, CFG.vocab_size)


def test_mlm_decoder_is_tied_and_loss_ignores_unlabelled():
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(CFG)
    ids, mask = inputs()
    labels = torch.full_like(ids, -100)
    labels[0, 1] = 7
    out = model(ids, attention_mask=mask, mlm_labels=labels)
    out.mlm_loss.backward()
    emb = model.bert.embeddings.word_embeddings.weight
    assert emb.grad[7].abs().sum() > 0  # the decoder is the embedding matrix
    assert "cls.predictions.decoder.weight" not in dict(model.named_parameters())
    torch.testing.assert_close(out.mlm_loss, torch.nn.functional.cross_entropy(
        out.mlm_logits, torch.tensor([7])))


def test_initialization_as_bert():
    torch.manual_seed(0)
    model = bertlab.BertForPreTraining(BertConfig.mini(vocab_size=2000))
    params = dict(model.named_parameters())
    w = params["bert.encoder.layer.0.attention.self.query.weight"]
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert (params["bert.encoder.layer.0.attention.self.query.bias"] == 0).all()
    assert (params["bert.embeddings.LayerNorm.weight"] == 1).all()
    assert (params["cls.predictions.bias"] == 0).all()
    assert (params["bert.embeddings.word_embeddings.weight"][0] == 0).all()  # [PAD]


@pytest.mark.parametrize("bad, message", [
    (dict(ids=torch.zeros(1, 33, dtype=torch.long)), "exceeds max_position_embeddings"),
    (dict(ids=torch.full((1, 4), 300)), "outside the vocabulary"),
    (dict(ids=torch.full((1, 4), -1)), "outside the vocabulary"),
    (dict(ids=torch.ones(1, 4)), "integer token ids"),
    (dict(ids=torch.ones(4, dtype=torch.long)), "(batch, seq_len)"),
    (dict(ids=torch.ones(2, 4, dtype=torch.long), mask=torch.ones(2, 5)),
     "attention_mask has shape"),
    (dict(ids=torch.ones(2, 4, dtype=torch.long), mask=torch.zeros(2, 4)), "all zeros"),
    (dict(ids=torch.ones(2, 4, dtype=torch.long), types=torch.ones(2, 3, dtype=torch.long)),
     "token_type_ids has shape"),
    (dict(ids=torch.ones(2, 4, dtype=torch.long), types=torch.full((2, 4), 2)), "type_vocab_size"),
])
def test_bad_input_is_a_clear_error(bad, message):
    model = bertlab.BertModel(CFG)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model(bad["ids"], bad.get("types"), bad.get("mask"))


def test_the_forward_pass_never_reads_values_off_the_host():
    """On an accelerator a value check waits for the device. Meta tensors have no values, so any
    read (`.item()`, a Python `if` on a tensor) raises: the forward pass must make none, and
    still mask the padding it cannot see."""
    model = bertlab.BertForPreTraining(CFG).to("meta")
    ids = torch.ones(2, 4, dtype=torch.long, device="meta")
    out = model(ids, attention_mask=torch.ones(2, 4, dtype=torch.long, device="meta"))
    assert out.mlm_logits.shape == (2, 4, CFG.vocab_size)


def test_the_training_loop_checks_values_on_the_host_before_moving_a_batch():
    from bertlab.training import TrainConfig, Trainer

    trainer = Trainer(bertlab.BertModel(CFG), TrainConfig(steps=1), 0, 1, torch.device("cpu"),
                      None, None)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trainer.to_device({"input_ids": torch.full((1, 4), 300)})


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        BertConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="swish")
    with pytest.raises(ValueError, match="unknown preset"):
        BertConfig.preset("huge")


def test_config_json_round_trip(tmp_path):
    cfg = BertConfig.mini(vocab_size=8000, num_labels=3)
    cfg.to_json(tmp_path / "config.json")
    assert BertConfig.from_json(tmp_path) == cfg
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not a BERT config"):
        BertConfig.from_json(tmp_path)


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a BERT checkpoint directory"):
        bertlab.BertModel.from_pretrained(tmp_path / "nowhere")
    BertConfig.tiny().to_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match="holds no weights"):
        bertlab.BertModel.from_pretrained(tmp_path)


def save_variant(src, dst, rename=lambda k: k, drop=(), config=None, as_bin=False):
    dst.mkdir()
    state = {rename(k): v for k, v in load_file(src / "model.safetensors").items()
             if not k.startswith(drop)}
    (dst / "config.json").write_text(json.dumps(config or json.loads(
        (src / "config.json").read_text())))
    if as_bin:
        torch.save(state, dst / "pytorch_model.bin")
    else:
        save_file(state, dst / "model.safetensors")
    return dst


def test_legacy_names_prefix_and_pickle(tmp_path):
    """gamma/beta LayerNorm names, a `bert.` prefix and pytorch_model.bin all load the same."""
    src = bertlab.minilm_path()
    legacy = save_variant(src, tmp_path / "legacy", as_bin=True,
                          rename=lambda k: "bert." + k.replace("Norm.weight", "Norm.gamma")
                          .replace("Norm.bias", "Norm.beta"))
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        want = bertlab.BertModel.from_pretrained(src).eval()(ids).last_hidden_state
        got = bertlab.BertModel.from_pretrained(legacy).eval()(ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_mismatched_checkpoints_name_the_parameter(tmp_path):
    src = bertlab.minilm_path()
    missing = save_variant(src, tmp_path / "missing", drop=("encoder.layer.5.output.dense",))
    with pytest.raises(ValueError, match=r"encoder\.layer\.5\.output\.dense\.weight"):
        bertlab.BertModel.from_pretrained(missing)
    extra = save_variant(src, tmp_path / "extra", rename=lambda k: k.replace(
        "encoder.layer.5.output.dense", "encoder.layer.5.output.dens"))
    with pytest.raises(ValueError, match=r"encoder\.layer\.5\.output\.dens\.weight"):
        bertlab.BertModel.from_pretrained(extra)
    config = json.loads((src / "config.json").read_text())
    wrong = save_variant(src, tmp_path / "wrong", config={**config, "intermediate_size": 1024})
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight.*\(1536, 384\)"):
        bertlab.BertModel.from_pretrained(wrong)


def test_a_missing_head_is_initialized_with_a_warning():
    with pytest.warns(bertlab.CheckpointWarning, match=r"cls\.predictions\.bias"):
        model = bertlab.BertForPreTraining.from_pretrained(bertlab.minilm_path())
    assert "cls.seq_relationship.weight" in model.loading_info["initialized_fresh"]
    assert not any(k.startswith("bert.") for k in model.loading_info["initialized_fresh"])
    with pytest.warns(bertlab.CheckpointWarning, match=r"qa_outputs\.weight"):
        qa = bertlab.BertForQuestionAnswering.from_pretrained(bertlab.minilm_path())
    assert set(qa.loading_info["ignored"]) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
