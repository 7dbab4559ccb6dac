"""Oracle tests: bertlab against transformers, on the real all-MiniLM-L6-v2 and on random models."""

import pytest
import torch
import transformers

import bertlab
from bertlab import BertConfig

transformers.logging.set_verbosity_error()

SENTENCES = [
    "The dog from down the street ran up to me and barked.",
    "Hi",
    "A much longer sentence, with punctuation; numbers like 1984 and words such as naïveté.",
]
TOL = dict(atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def batch():
    tokenizer = transformers.AutoTokenizer.from_pretrained(bertlab.minilm_path())
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def ours():
    return bertlab.BertModel.from_pretrained(bertlab.minilm_path()).eval()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("output_attentions", [False, True])
def test_minilm_matches_transformers(ours, batch, impl, output_attentions):
    theirs = transformers.BertModel.from_pretrained(bertlab.minilm_path(),
                                                    attn_implementation=impl).eval()
    real = batch["attention_mask"].bool()  # outputs at padding positions are meaningless
    assert not real.all(), "the batch must contain padding"
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                 output_attentions=output_attentions)
        b = theirs(**batch, output_attentions=output_attentions and impl == "eager")
    torch.testing.assert_close(a.last_hidden_state[real], b.last_hidden_state[real], **TOL)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, **TOL)
    if output_attentions and impl == "eager":
        assert len(a.attentions) == 6 and a.attentions[0].shape == (3, 12, real.size(1),
                                                                     real.size(1))
        for x, y in zip(a.attentions, b.attentions):  # (B, H, T, T): rows of real queries
            torch.testing.assert_close(x.transpose(1, 2)[real], y.transpose(1, 2)[real], **TOL)


def test_minilm_loads_every_weight(ours):
    assert ours.loading_info == {"initialized_fresh": [], "ignored": []}
    assert ours.num_parameters() == 22_713_216


UNUSUAL = dict(vocab_size=1000, hidden_size=96, num_hidden_layers=3, num_attention_heads=3,
               intermediate_size=200, max_position_embeddings=64, type_vocab_size=2)


def random_inputs(n=4, t=20, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, t), generator=g)
    types = (torch.arange(t) >= t // 2).long().expand(n, t).clone()
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 12:] = 0
    mask[3, 5:] = 0
    return ids, types, mask


def hf_model(cls_name, tmp_path):
    """A randomly initialized transformers model of the unusual config, saved and reloaded."""
    config = transformers.BertConfig(**UNUSUAL, hidden_dropout_prob=0.0, num_labels=5,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # make biases and LayerNorms non-trivial so a mix-up shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    return model


def logits_of(out):
    return [out.logits] if hasattr(out, "logits") else [out.prediction_logits,
                                                        out.seq_relationship_logits]


def our_logits(out):
    return [out.logits] if hasattr(out, "logits") else [out.mlm_logits, out.nsp_logits]


@pytest.mark.parametrize("cls_name", ["BertForPreTraining", "BertForSequenceClassification"])
def test_round_trip_transformers_to_bertlab_to_transformers(cls_name, tmp_path):
    theirs = hf_model(cls_name, tmp_path)
    ours = getattr(bertlab, cls_name).from_pretrained(tmp_path / "hf").eval()
    assert ours.loading_info["initialized_fresh"] == []
    ids, types, mask = random_inputs()
    with torch.no_grad():
        want = logits_of(theirs(input_ids=ids, token_type_ids=types, attention_mask=mask))
        got = our_logits(ours(ids, types, mask))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **TOL)
        ours.save_pretrained(tmp_path / "ours")
        again = getattr(transformers, cls_name).from_pretrained(tmp_path / "ours").eval()
        back = logits_of(again(input_ids=ids, token_type_ids=types, attention_mask=mask))
    for a, b in zip(back, want):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cls_name", ["BertForPreTraining", "BertForSequenceClassification"])
def test_round_trip_bertlab_to_transformers(cls_name, tmp_path):
    torch.manual_seed(1)
    ours = getattr(bertlab, cls_name)(BertConfig(**UNUSUAL, num_labels=5)).eval()
    ours.save_pretrained(tmp_path)
    theirs = getattr(transformers, cls_name).from_pretrained(tmp_path).eval()
    ids, types, mask = random_inputs(seed=1)
    with torch.no_grad():
        want = logits_of(theirs(input_ids=ids, token_type_ids=types, attention_mask=mask))
        for a, b in zip(our_logits(ours(ids, types, mask)), want):
            torch.testing.assert_close(a, b, **TOL)


def test_mlm_labels_decode_only_labelled_positions(tmp_path):
    """With labels, MLM logits are those of the full decode at the labelled positions, and the
    loss equals transformers' (which decodes every position)."""
    theirs = hf_model("BertForPreTraining", tmp_path)
    ours = bertlab.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ids, types, mask = random_inputs()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[2, 7], labels[3, 1] = 17, 400, 999
    nsp = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        full = ours(ids, types, mask)
        part = ours(ids, types, mask, mlm_labels=labels, nsp_labels=nsp)
        ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                     next_sentence_label=nsp)
    assert part.mlm_logits.shape == (3, UNUSUAL["vocab_size"])
    torch.testing.assert_close(part.mlm_logits, full.mlm_logits[labels != -100], **TOL)
    torch.testing.assert_close(part.loss, ref.loss, **TOL)


@pytest.mark.parametrize("preset, expected", [("base", 109_482_240), ("large", 335_141_888)])
def test_parameter_counts_match_transformers(preset, expected):
    with torch.device("meta"):
        ours = bertlab.BertModel(BertConfig.preset(preset))
        theirs = transformers.BertModel(transformers.BertConfig(**BertConfig.preset(
            preset).to_dict()))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == expected
