"""Chapter 10: inside BERT: the checks of exercises/10."""

from __future__ import annotations

import math

import torch

from .framework import Answer, Case, Exercise, Mistake, probabilities


def padded_attention(B, H, T, lengths):
    """Random attention weights (B, H, T, T) as a model gives them for sequences of `lengths`
    real tokens, padded to T: no weight on the padding keys. Returns (weights, attention_mask)."""
    attention_mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).long()  # (B, T)
    scores = (2 * torch.randn(B, H, T, T)).masked_fill(attention_mask[:, None, None, :] == 0,
                                                       float("-inf"))
    return scores.softmax(-1), attention_mask


def over_real_queries(values, attention_mask, real=True):
    """values (B, ..., T), one per query -> (B, ...): their mean over the real queries (with
    `real=False`, over all T, padding included)."""
    if not real:
        return values.mean(-1)
    mask = attention_mask.to(values.dtype).view(-1, *[1] * (values.dim() - 2), values.size(-1))
    return (values * mask).sum(-1) / mask.sum(-1)


def distance_wrong(signed=False, real=True, by_T=False, keys=False):
    """The mean attention distance with one step changed (with none, the reference)."""
    def attention_distance(weights, attention_mask):
        position = torch.arange(weights.size(-1))
        offset = position[None, :] - position[:, None]  # (T, T): key j - query i
        distance = (offset if signed else offset.abs()).to(weights.dtype)
        weighted = weights * distance  # (B, H, T, T)
        per_query = weighted.sum(-2) if keys else weighted.sum(-1)  # (B, H, T)
        if by_T:
            mask = attention_mask[:, None, :].to(weights.dtype)
            return (per_query * mask).sum(-1) / weights.size(-1)
        return over_real_queries(per_query, attention_mask, real)  # (B, H)
    return attention_distance


reference_attention_distance = distance_wrong()


def distance_cases():
    def previous_token_head(T, length):
        """One head in which every real query but the first puts all its weight on key i-1."""
        weights = torch.zeros(1, 1, T, T)
        weights[0, 0, 0, 0] = 1.0
        for i in range(1, T):
            weights[0, 0, i, min(i, length) - 1] = 1.0
        return weights, (torch.arange(T) < length).long()[None]
    return [Case("(2, 3, 6, 6), the second sequence padded after 4 tokens",
                 padded_attention(2, 3, 6, [6, 4])),
            Case("batch of 1, no padding", padded_attention(1, 2, 5, [5])),
            Case("3 sequences of 4, 2 and 1 real tokens", padded_attention(3, 2, 4, [4, 2, 1])),
            Case("one-hot: every query on key i-1, 2 [PAD]", previous_token_head(6, 4)),
            Case("one-hot: every query on itself (distance 0)",
                 (torch.eye(4).expand(2, 3, 4, 4).clone(), torch.tensor([[1, 1, 1, 1],
                                                                         [1, 1, 0, 0]])))]


attention_distance = Exercise(
    "attention_distance", reference_attention_distance, distance_cases,
    [Mistake("average over the real queries only: a padding query (attention_mask 0) is not a "
             "token of the text, and its row must not count",
             distance_wrong(real=False)),
     Mistake("the distance is |i - j|, without a sign: a key two places to the left is as far "
             "as one two places to the right, and signed distances cancel out",
             distance_wrong(signed=True)),
     Mistake("divide by the number of real queries of each sequence (attention_mask.sum), not "
             "by T", distance_wrong(by_T=True)),
     Mistake("each query's row (dim=-1, over the keys) is its distribution: sum w_ij·|i - j| "
             "over the keys j, then average over the queries i",
             distance_wrong(keys=True))],
    hint="d_i = Σ_j w_ij·|i - j| (sum over the keys, dim=-1), then the mean of d_i over the "
         "queries i with attention_mask 1, per sequence and head: (B, H)")


def entropy(p):  # (..., T) -> (...): -Σ p log p, 0 log 0 = 0
    return -torch.special.xlogy(p, p).sum(-1)


def divergence_wrong(nan=False, real=True, halve=True, bits=False):
    """The heads' Jensen-Shannon divergences with one step changed (with none, the
    reference)."""
    def head_divergence(weights, attention_mask):
        p, q = weights[:, :, None], weights[:, None]  # (B, H, 1, T, T), (B, 1, H, T, T)
        m = (p + q) / 2
        if nan:  # ½ KL(p ‖ m) + ½ KL(q ‖ m) with p / m: 0 / 0 where both heads give 0
            js = ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)) / 2
        else:
            js = entropy(m) - (entropy(p) + entropy(q)) / (2 if halve else 1)  # (B, H, H, T)
        js = js / math.log(2) if bits else js
        return over_real_queries(js, attention_mask, real)  # (B, H, H)
    return head_divergence


reference_head_divergence = divergence_wrong()


def divergence_cases():
    one_hot = torch.zeros(1, 3, 4, 4)
    one_hot[0, 0] = torch.eye(4)  # head 0: each query on itself
    one_hot[0, 1] = torch.eye(4)  # head 1: the same as head 0
    one_hot[0, 2] = torch.eye(4).roll(1, 0)  # head 2: each query on another key
    return [Case("(2, 3, 5, 5), the second sequence padded after 3 tokens",
                 padded_attention(2, 3, 5, [5, 3])),
            Case("batch of 1, 4 heads, no padding", padded_attention(1, 4, 6, [6])),
            Case("3 sequences of 4, 4 and 1 real tokens", padded_attention(3, 2, 4, [4, 4, 1])),
            Case("one-hot rows: two heads alike (0), one apart (log 2)",
                 (one_hot, torch.ones(1, 4, dtype=torch.long)))]


head_divergence = Exercise(
    "head_divergence", reference_head_divergence, divergence_cases,
    [Mistake("where both heads give a key 0 weight (a padding key, a one-hot row), p·log(p/m) "
             "is 0·log(0/0) = NaN (and so is F.kl_div of m.log()): write JS = H(m) - (H(p) + "
             "H(q))/2, with H from torch.special.xlogy (0 log 0 = 0)", divergence_wrong(nan=True)),
     Mistake("average over the real queries only: a padding query (attention_mask 0) is not a "
             "token of the text, and its row must not count", divergence_wrong(real=False)),
     Mistake("subtract the *mean* of the two heads' entropies: JS = H(m) - (H(p) + H(q))/2",
             divergence_wrong(halve=False)),
     Mistake("use the natural log (nats, like the entropy above), not log2: JS is at most "
             "log 2 = 0.69", divergence_wrong(bits=True))],
    hint="p = weights[:, :, None], q = weights[:, None] (every pair of heads), m = (p + q)/2; "
         "JS = H(m) - (H(p) + H(q))/2 per query, H(p) = -Σ p log p over the keys (0 log 0 = 0); "
         "then the mean over the real queries: (B, H, H)")


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
            Case("3 layers as a tuple, residual 0.3", (tuple(probabilities(2, 3, 4, 4)
                                                             for _ in range(3)), 0.3)),
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
    assert encoding.tokens[0] == "[CLS]"  # key 0, the only [CLS]
    shares = [w[0, :, :, 0].mean().item() for w in out.attentions]  # over queries and heads
    return max(range(len(shares)), key=shares.__getitem__)


cls_layer = Answer(
    "cls_layer", busiest_cls_layer,
    hint="run the measurements above and read the column 'to [CLS]': the layer (counted from 0) "
         "with the largest value",
    wrong=[Mistake("layers are counted from 0, as the table prints them", lambda: 5),
           Mistake("that is the layer with the most attention to [SEP]; the question asks for "
                   "[CLS]", lambda: 0)])
