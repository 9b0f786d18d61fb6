"""Next-token choice per row: greedy at temperature 0, else temperature, top-k and top-p sampling,
drawn from the request's own generator when it gave a seed (so seeded runs repeat exactly); forced
tokens (a required tool call) override the choice."""

from __future__ import annotations

import torch

from inference.engine.sequence import Sequence


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """logits [B, V] float32 → one token id per sequence."""
    greedy = logits.argmax(dim=-1).tolist()
    out = []
    for i, seq in enumerate(seqs):
        token = _force(seq, _choose(logits[i], greedy[i], seq))
        if seq.params.logprobs is not None:
            seq.last_logprobs = _logprobs(logits[i], token, seq.params.logprobs)
        out.append(token)
    return out


def _logprobs(logits: torch.Tensor, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` and its `top` most likely tokens (before temperature)."""
    lp = logits.float().log_softmax(-1)
    best = torch.topk(lp, top) if top else None
    alternatives = (
        list(zip(best.indices.tolist(), best.values.tolist(), strict=True)) if best is not None else []
    )
    return float(lp[token]), alternatives


def _force(seq: Sequence, token: int) -> int:
    forced = seq.params.forced
    if forced is None:
        return token
    pos = seq.forced_pos
    if pos is not None and pos < len(forced.ids):
        seq.forced_pos = pos + 1
        return forced.ids[pos]
    if pos is None:
        if token in forced.stop_ids or token == forced.ids[0]:
            seq.forced_pos = 1
            return forced.ids[0]
        if token in forced.after:
            seq.forced_pos = 0
    return token


def _choose(logits: torch.Tensor, greedy: int, seq: Sequence) -> int:
    """logits [V] → the model's token for one sequence."""
    p = seq.params
    if p.temperature <= 0 or p.top_k == 1:
        return greedy
    row = logits / p.temperature
    if p.top_k and p.top_k < row.shape[0]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop = probs.cumsum(-1) - probs > p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        row = torch.full_like(row, float("-inf")).scatter_(0, order, sorted_logits)
    probs = row.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=seq.generator))
