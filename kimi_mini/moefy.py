"""MoEfication (Zhang et al., 2022): split each dense FFN of the base model into experts by clustering neurons
that fire together, then fit a router per layer that predicts which experts matter most for a token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .base import KIMI_SPECIAL_TOKENS
from .model import KimiMini, MiniConfig


def balanced_kmeans(feats: torch.Tensor, n_clusters: int, iters: int = 8, seed: int = 0) -> torch.Tensor:
    """Cluster rows of feats [N, F] into n_clusters groups of exactly N/n_clusters rows (cosine similarity,
    greedy balanced assignment each round). Returns labels [N]."""
    n = feats.shape[0]
    size = n // n_clusters
    x = F.normalize(feats.float(), dim=-1)
    g = torch.Generator().manual_seed(seed)
    cent = x[torch.randperm(n, generator=g)[:n_clusters]].clone()
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        sim = x @ cent.T  # [N, C]
        order = torch.argsort(sim.flatten(), descending=True, stable=True).tolist()
        lab, fill = [-1] * n, [0] * n_clusters  # plain lists: this loop runs N*C times
        for idx in order:
            i, c = divmod(idx, n_clusters)
            if lab[i] < 0 and fill[c] < size:
                lab[i] = c
                fill[c] += 1
        labels = torch.tensor(lab)
        cent = F.normalize(torch.stack([x[labels == c].mean(0) for c in range(n_clusters)]), dim=-1)
    return labels


# Each new Kimi token starts from a SmolLM2 structural token (measured on traces, mean loss on the rest of
# the text: 2.3 with these, 5.4 with random rows; their own loss 8.5 from the mean of their name's pieces).
NEW_TOKEN_ANCHORS = {
    "<|im_system|>": "<|im_start|>",
    "<|im_user|>": "<|im_start|>",
    "<|im_assistant|>": "<|im_start|>",
    "<|im_middle|>": "\u010a",  # byte-level "\n": SmolLM2 writes <|im_start|>role\n
    "<think>": "<jupyter_text>",
    "</think>": "<empty_output>",
    "<|tool_calls_section_begin|>": "<jupyter_code>",
    "<|tool_calls_section_end|>": "<jupyter_output>",
    "<|tool_call_begin|>": "<filename>",
    "<|tool_call_argument_begin|>": "<file_sep>",
    "<|tool_call_end|>": "<issue_closed>",
}


def init_weights(base: dict[str, torch.Tensor], tokenizer, cfg: MiniConfig) -> dict[str, torch.Tensor]:
    """Base weights + identity routing + new-token embeddings initialised as the mean of their text's pieces."""
    w = dict(base)
    emb = base["model.embed_tokens.weight"]
    rows = []
    for t in KIMI_SPECIAL_TOKENS:
        ids = [i for i in tokenizer.encode(t.strip("<|>").replace("_", " "), add_special_tokens=False).ids]
        # Start from a structural token SmolLM2 already knows (distinct from text, so as an output row of the
        # tied head it does not compete with its own pieces), plus a hint of the token's name.
        anchor = emb[tokenizer.token_to_id(NEW_TOKEN_ANCHORS[t])]
        rows.append(anchor if t == "<|im_middle|>" else anchor + 0.3 * emb[ids].mean(0))
    w["embed_new"] = torch.stack(rows)
    for i in range(cfg.n_layers):
        w[f"model.layers.{i}.mlp.router"] = torch.zeros(cfg.n_experts, cfg.dim)
    return w


@torch.no_grad()
def moefy(weights: dict[str, torch.Tensor], calib: list[torch.Tensor], cfg: MiniConfig, seed: int = 0):
    """Permute each layer's FFN neurons into cfg.n_experts contiguous experts and fit routers, in place on
    `weights` (which must come from init_weights). Returns the permutations {layer: LongTensor[I]}."""
    model = KimiMini(cfg, weights)
    model.set_mode(dense=True)
    model.to(torch.bfloat16)  # calibration only needs activation patterns; bf16 is ~2x faster here
    captured: dict[int, list] = {i: [] for i in range(cfg.n_layers)}

    def hook(i):
        def fn(mod, args, out):
            x = args[0].reshape(-1, cfg.dim)
            h = F.silu(mod.gate_proj(x)) * mod.up_proj(x)  # [T, I]
            captured[i].append((x.float(), h.float()))

        return fn

    handles = [layer.mlp.register_forward_hook(hook(i)) for i, layer in enumerate(model.layers)]
    for ids in tqdm(calib, desc="moefy: calibration", leave=False):
        model(ids.unsqueeze(0))
    for h in handles:
        h.remove()
    perms = {}
    for i in tqdm(range(cfg.n_layers), desc="moefy: cluster + router"):
        x = torch.cat([a for a, _ in captured[i]])  # [T, D]
        h = torch.cat([b for _, b in captured[i]])  # [T, I]
        captured[i] = None
        labels = balanced_kmeans(h.abs().T, cfg.n_experts, seed=seed + i)
        perm = torch.argsort(labels * cfg.intermediate + torch.arange(cfg.intermediate))
        perms[i] = perm
        p = f"model.layers.{i}.mlp."
        weights[p + "gate_proj.weight"] = weights[p + "gate_proj.weight"][perm].contiguous()
        weights[p + "up_proj.weight"] = weights[p + "up_proj.weight"][perm].contiguous()
        weights[p + "down_proj.weight"] = weights[p + "down_proj.weight"][:, perm].contiguous()
        # Router target: the top_k experts by the norm of their contribution to this token's output.
        hp = h[:, perm].unflatten(-1, (cfg.n_experts, -1))  # [T, E, S]
        down = weights[p + "down_proj.weight"].unflatten(-1, (cfg.n_experts, -1))  # [D, E, S]
        contrib = torch.einsum("tes,des->ted", hp, down).norm(dim=-1)  # [T, E]
        target = torch.zeros_like(contrib).scatter(-1, contrib.topk(cfg.top_k, -1).indices, 1.0 / cfg.top_k)
        weights[p + "router"] = _fit_router(x, target, seed + i)
    return perms


def _fit_router(x: torch.Tensor, target: torch.Tensor, seed: int, steps: int = 80) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.enable_grad():
        w = torch.zeros(target.shape[1], x.shape[1], requires_grad=True)
        opt = torch.optim.Adam([w], lr=1e-2)
        for _ in range(steps):
            loss = -(target * F.log_softmax(x @ w.T, -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        # Keep the ranking, flatten the weights: Mixtral renormalizes the softmax over the chosen experts, and
        # peaked weights rescale expert outputs the dense FFN summed with weight 1 (measured: loss 6.2 vs 3.1).
        w = w.detach()
        return w * (0.25 / (x @ w.T).std())
