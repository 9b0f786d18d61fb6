"""Routing against plain, loop-by-loop references of Mixtral's and DeepSeek-V3's (Kimi K2's) rules."""

import math

import pytest
import torch

from inference.kernels import select_experts_grouped, select_experts_softmax


def _softmax_topk_reference(logits, k, renormalize):
    weights, ids = [], []
    for row in logits.tolist():
        z = max(row)
        probs = [math.exp(v - z) for v in row]
        total = sum(probs)
        probs = [p / total for p in probs]
        best = sorted(range(len(row)), key=lambda e: -probs[e])[:k]
        w = [probs[e] for e in best]
        if renormalize:
            w = [v / sum(w) for v in w]
        weights.append(w)
        ids.append(best)
    return torch.tensor(weights), torch.tensor(ids)


def _grouped_reference(logits, bias, k, n_group, topk_group, scale, renormalize):
    weights, ids = [], []
    experts = logits.shape[1]
    per_group = experts // n_group
    for row in logits.tolist():
        scores = [1 / (1 + math.exp(-v)) for v in row]
        biased = [s + float(b) for s, b in zip(scores, bias, strict=True)]
        group_rank = sorted(
            range(n_group),
            key=lambda gi: -sum(sorted(biased[gi * per_group : (gi + 1) * per_group], reverse=True)[:2]),
        )
        allowed = [e for gi in group_rank[:topk_group] for e in range(gi * per_group, (gi + 1) * per_group)]
        best = sorted(allowed, key=lambda e: -biased[e])[:k]
        w = [scores[e] for e in best]
        if renormalize:
            w = [v / sum(w) for v in w]
        weights.append([v * scale for v in w])
        ids.append(best)
    return torch.tensor(weights), torch.tensor(ids)


def _same_choice(ids, ref_ids):
    return torch.equal(ids.sort(dim=-1).values, ref_ids.sort(dim=-1).values)


@pytest.mark.parametrize("renormalize", [True, False])
def test_softmax_topk_matches_mixtral_rule(renormalize):
    logits = torch.randn(11, 8, generator=torch.Generator().manual_seed(0))
    weights, ids = select_experts_softmax(logits, 2, renormalize=renormalize)
    ref_w, ref_ids = _softmax_topk_reference(logits, 2, renormalize)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(weights, ref_w, rtol=1e-5, atol=1e-6)
    if renormalize:
        torch.testing.assert_close(weights.sum(-1), torch.ones(11))


@pytest.mark.parametrize(
    ("experts", "k", "n_group", "topk_group"),
    [(16, 4, 1, 1), (32, 8, 8, 4), (64, 6, 1, 1)],  # Kimi K2-like, DeepSeek-V3-like, Moonlight-like
)
def test_grouped_topk_matches_deepseek_v3_rule(experts, k, n_group, topk_group):
    g = torch.Generator().manual_seed(experts)
    logits = torch.randn(9, experts, generator=g)
    bias = torch.randn(experts, generator=g) * 0.5
    weights, ids = select_experts_grouped(logits, bias, k, n_group, topk_group, 2.5, True)
    ref_w, ref_ids = _grouped_reference(logits, bias, k, n_group, topk_group, 2.5, True)
    assert ids.shape == (9, k) and _same_choice(ids, ref_ids)
    order, ref_order = ids.argsort(-1), ref_ids.argsort(-1)
    torch.testing.assert_close(weights.gather(1, order), ref_w.gather(1, ref_order), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.full((9,), 2.5))


def test_bias_steers_the_choice_but_not_the_weights():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0])  # expert 3 is chosen only because of its bias
    weights, ids = select_experts_grouped(logits, bias, 2, renormalize=False)
    assert sorted(ids[0].tolist()) == [0, 3]
    torch.testing.assert_close(weights[0, ids[0].tolist().index(3)], torch.sigmoid(torch.tensor(-1.0)))


def test_only_the_best_groups_compete():
    logits = torch.tensor([[0.0, 0.0, 3.0, 2.9, 5.0, -9.0, -9.0, -9.0]])
    # groups of 2: {0,1}, {2,3}, {4,5}, {6,7}; by top-2 sums {2,3} beats {4,5}: expert 4 is left out
    _, ids = select_experts_grouped(logits, None, 2, n_group=4, topk_group=1)
    assert sorted(ids[0].tolist()) == [2, 3]
