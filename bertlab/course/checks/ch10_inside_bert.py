"""Chapter 10: inside BERT: the checks of exercises/10."""

from __future__ import annotations

import math

import torch

from .framework import Answer, Case, Exercise, Mistake, probabilities


def reference_attention_entropy(weights):  # (B, H, Tq, Tk) -> (B, H)
    return -torch.special.xlogy(weights, weights).sum(-1).mean(-1)  # 0 log 0 = 0


def one_hot_rows():
    weights = probabilities(1, 2, 3, 3)
    weights[0, 0] = torch.eye(3)
    return weights


attention_entropy = Exercise(
    "attention_entropy", reference_attention_entropy,
    lambda: [Case("(2, 3, 4, 4)", (probabilities(2, 3, 4, 4),)),
             Case("one-hot rows (0 log 0)", (one_hot_rows(),)),
             Case("uniform rows, Tq=2 != Tk=5", (torch.full((1, 1, 2, 5), 0.2),))],
    [Mistake("0 · log 0 gives NaN in torch: count it as 0 (torch.special.xlogy(p, p) does)",
             lambda w: -(w * w.log()).sum(-1).mean(-1)),
     Mistake("use the natural log (nats), not log2",
             lambda w: reference_attention_entropy(w) / math.log(2)),
     Mistake("average over the queries, don't sum",
             lambda w: -torch.special.xlogy(w, w).sum(-1).sum(-1)),
     Mistake("each *row* (one query's weights over the keys) is a distribution: sum over dim=-1",
             lambda w: -torch.special.xlogy(w, w).sum(-2).mean(-1))],
    hint="H(row) = -Σ p log p over the keys (dim=-1), 0 log 0 = 0; then the mean over queries")


def reference_attention_to(weights, input_ids, token_id):  # (B, H, T, T), (B, T) -> (B, H)
    is_token = (input_ids == token_id).to(weights.dtype)  # (B, T)
    return (weights * is_token[:, None, None, :]).sum(-1).mean(-1)


def attention_to_cases():
    ids = torch.tensor([[101, 7, 8, 102, 9, 102], [101, 5, 102, 6, 6, 102]])
    return [Case("[SEP] twice in each sequence", (probabilities(2, 3, 6, 6), ids, 102)),
            Case("[CLS], batch of 1", (probabilities(1, 2, 6, 6), ids[:1], 101)),
            Case("a token that is not there", (probabilities(1, 2, 6, 6), ids[:1], 999))]


attention_to = Exercise(
    "attention_to", reference_attention_to, attention_to_cases,
    [Mistake("the token is a *key*: select the columns (last axis), not the query rows",
             lambda w, ids, t: (w * (ids == t).to(w.dtype)[:, None, :, None]).sum(-1).mean(-1)),
     Mistake("average over the queries, don't sum",
             lambda w, ids, t: (w * (ids == t).to(w.dtype)[:, None, None, :]).sum((-1, -2)))],
    hint="mask the keys holding token_id, sum each query's weights on them, mean over queries")


def rollout_wrong(heads=lambda w: w.mean(1), fixed=None, backwards=False, every=True):
    """Rollout layer by layer with one step changed (for the mistakes; with none changed, the
    reference): `fixed` a residual weight used instead of the argument."""
    def rollout(attentions, residual=0.5):
        r = residual if fixed is None else fixed
        steps, result = [], None
        for weights in attentions:
            eye = torch.eye(weights.size(-1), dtype=weights.dtype)  # (T, T)
            a = (1 - r) * heads(weights) + r * eye  # (B, T, T)
            result = a if result is None else (result @ a if backwards else a @ result)
            steps.append(result)
        return torch.stack(steps) if every else result  # (L, B, T, T)
    return rollout


reference_attention_rollout = rollout_wrong()


def rollout_cases():
    return [Case("3 layers, batch of 2", ([probabilities(2, 2, 4, 4) for _ in range(3)],)),
            Case("one layer", ([probabilities(1, 3, 5, 5)],)),
            Case("2 layers as a tuple, batch of 1", ((probabilities(1, 2, 3, 3),
                                                      probabilities(1, 2, 3, 3)),)),
            Case("residual 0.9", ([probabilities(2, 2, 4, 4) for _ in range(2)], 0.9)),
            Case("residual 0: attention alone", ([probabilities(1, 2, 4, 4) for _ in range(3)],
                                                 0.0)),
            Case("residual 1: the identity", ([probabilities(1, 2, 3, 3) for _ in range(2)],
                                              1.0))]


attention_rollout = Exercise(
    "attention_rollout", reference_attention_rollout, rollout_cases,
    [Mistake("multiply later layers on the left: rollout_l = A_l @ rollout_(l-1)",
             rollout_wrong(backwards=True)),
     Mistake("use the `residual` argument: A = (1 - residual)·mean_heads(W) + residual·I",
             rollout_wrong(fixed=0.5)),
     Mistake("account for the residual: A = (1 - residual)·mean_heads(W) + residual·I",
             rollout_wrong(fixed=0.0)),
     Mistake("the residual weight goes on the identity: (1 - residual)·W + residual·I, not "
             "residual·W + (1 - residual)·I",
             lambda att, residual=0.5: rollout_wrong()(att, 1 - residual)),
     Mistake("average the heads (mean over dim 1), so each row still sums to 1",
             rollout_wrong(heads=lambda w: w.sum(1))),
     Mistake("return every layer's rollout, stacked: (L, B, T, T), not only the last one",
             rollout_wrong(every=False))],
    hint="A_l = (1 - residual)·W_l.mean(1) + residual·I; rollout_1 = A_1, rollout_l = A_l @ "
         "rollout_(l-1); return torch.stack of all L of them, (L, B, T, T)")


def entropies(T=22, two=2):
    return [round(math.log(T), 2), round(math.log(two), 2)]


predicted_entropies = Answer(
    "predicted_entropies", lambda: entropies(), tolerance=0.01,
    hint="a row that spreads its weight evenly over n keys has entropy log n (natural log)",
    wrong=[Mistake("entropy here is in nats, the natural log: log(22), not log2(22)",
                   lambda: [round(math.log2(22), 2), 1.0]),
           Mistake("the entropy of an even split over n keys is log n, and it does not depend on "
                   "which keys they are: log 2 for two keys",
                   lambda: [round(math.log(22), 2), 0.0]),
           Mistake("that is log(21): the pair has 22 tokens, [CLS] and both [SEP] included",
                   lambda: [round(math.log(21), 2), round(math.log(2), 2)])])


def busiest_cls_layer():
    """The layer of MiniLM whose heads give [CLS] the largest share of attention, on the
    chapter's sentence pair (averaged over queries and heads)."""
    from tokenizers import Tokenizer

    from ...checkpoint import minilm_path
    from ...model import BertModel
    model = BertModel.from_pretrained(minilm_path()).eval()
    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()
    encoding = tokenizer.encode("The dog from down the street ran up to me.",
                                "It wanted to play with the ball.")
    input_ids = torch.tensor([encoding.ids])  # (1, T)
    with torch.no_grad():
        out = model(input_ids, token_type_ids=torch.tensor([encoding.type_ids]),
                    output_attentions=True)
    cls = tokenizer.token_to_id("[CLS]")
    shares = [reference_attention_to(w, input_ids, cls)[0].mean().item() for w in out.attentions]
    return max(range(len(shares)), key=shares.__getitem__)


cls_layer = Answer(
    "cls_layer", busiest_cls_layer,
    hint="run the measurements above and read the column 'to [CLS]': the layer (counted from 0) "
         "with the largest value",
    wrong=[Mistake("layers are counted from 0, as the table prints them", lambda: 5),
           Mistake("that is the layer with the most attention to [SEP]; the question asks for "
                   "[CLS]", lambda: 0)])
