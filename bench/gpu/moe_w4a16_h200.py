"""GPU benchmark (one H200, < 8 min): our Triton W4A16 fused MoE vs SGLang's Marlin and Triton W4A16 MoE vs bf16.

    python bench/gpu/moe_w4a16_h200.py [--shapes kimi-k2 moonlight] [--tokens 1 2 4 8 16 32 64 128 256]
    python bench/gpu/moe_w4a16_h200.py --tune    # sweep our kernel's tile configs; copy winners to _CONFIGS

Kimi K2 expert shapes with all 384 experts (int4 8.5 GB, bf16 34 GB) and Moonlight-16B-A3B. Every path gets
the same weights (ours in the checkpoint layout, SGLang's converted the way its loaders do) and the same
routing; outputs are checked against a dequantize + bf16 matmul reference before timing. SGLang paths are
skipped (with the reason) where SGLang is not installed. Times: triton.testing.do_bench (median, L2 flushed).
"""

import argparse
import functools
import time
import traceback

import torch
import triton

from inference.kernels import Int4Experts, fused_moe_w4a16, select_experts_softmax
from inference.kernels.triton_moe import fused_moe_triton

SHAPES = {
    "kimi-k2": (7168, 2048, 384, 8),
    "moonlight": (2048, 1408, 64, 6),
    "smoke": (128, 64, 8, 2),  # --smoke: checks this script on CPU under TRITON_INTERPRET=1
}
GROUP = 32


def random_experts(e, n, k, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    packed = torch.randint(-(2**31), 2**31 - 1, (e, n, k // 8), dtype=torch.int32, device=device, generator=g)
    scale = (torch.rand(e, n, k // GROUP, device=device, generator=g) * 0.01 + 0.001).to(torch.bfloat16)
    return Int4Experts(packed, scale, GROUP)


def reference(hidden, w13, w2, weights, ids):
    """Dequantize only the experts in use, bf16 matmuls, float32 accumulation of the weighted sum."""
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    inter = w2.in_features
    for e in torch.unique(ids).tolist():
        rows, slots = (ids == e).nonzero(as_tuple=True)
        h = hidden[rows] @ w13.dequantize(hidden.dtype, expert=e).t()
        a = torch.nn.functional.silu(h[:, :inter].float()) * h[:, inter:].float()
        y = a.to(hidden.dtype) @ w2.dequantize(hidden.dtype, expert=e).t()
        out.index_add_(0, rows, y.float() * weights[rows, slots, None])
    return out.to(hidden.dtype)


class SGLangPaths:
    """SGLang's own W4A16 MoE paths on the same weights; each one records why it is unavailable."""

    def __init__(self, w13: Int4Experts, w2: Int4Experts, hidden_size: int, inter: int, top_k: int):
        self.errors: dict[str, str] = {}
        self.paths = {}
        try:
            self._setup_triton(w13, w2, hidden_size, inter, top_k)
        except Exception:  # report and carry on: the bench still measures the other paths
            self.errors["sglang triton"] = traceback.format_exc(limit=2).strip().splitlines()[-1]
        try:
            self._setup_marlin(w13, w2)
        except Exception:
            self.errors["sglang marlin"] = traceback.format_exc(limit=2).strip().splitlines()[-1]

    def _setup_triton(self, w13, w2, hidden_size, inter, top_k):
        from sglang.srt.layers.moe.fused_moe_triton.fused_moe import fused_experts
        from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
        from sglang.srt.layers.moe.topk import StandardTopKOutput

        # SGLang's Triton int4 path reads [E, N, K/2] uint8 (our int32 words seen as bytes), scales [E, N, K/g].
        w1_u8, w2_u8 = w13.weight_packed.view(torch.uint8), w2.weight_packed.view(torch.uint8)
        config = MoeRunnerConfig(inplace=False)

        def run(hidden, weights, ids, logits):
            topk = StandardTopKOutput(weights, ids.to(torch.int32), logits)
            return fused_experts(
                hidden,
                w1_u8,
                w2_u8,
                topk,
                config,
                use_int4_w4a16=True,
                w1_scale=w13.weight_scale,
                w2_scale=w2.weight_scale,
                block_shape=[0, GROUP],
            )

        self.paths["sglang triton"] = run
        self._bf16_fused_experts = (fused_experts, StandardTopKOutput, config)

    def _setup_marlin(self, w13, w2):
        from sglang.srt.hardware_backend.gpu.quantization.gptq_kernels import gptq_marlin_moe_repack
        from sglang.srt.layers.moe.fused_moe_triton.fused_marlin_moe import fused_marlin_moe
        from sglang.srt.layers.quantization.marlin_utils import (
            marlin_make_workspace,
            marlin_moe_permute_scales,
        )

        def to_marlin(experts: Int4Experts):
            e, n, k = experts.num_experts, experts.out_features, experts.in_features
            gptq = experts.weight_packed.transpose(1, 2).contiguous()  # [E, K/8, N], as SGLang loads it
            empty = torch.empty((e, 0), dtype=torch.int32, device=gptq.device)
            q = gptq_marlin_moe_repack(gptq, empty, k, n, 4)
            s = marlin_moe_permute_scales(experts.weight_scale.transpose(1, 2).contiguous(), k, n, GROUP)
            return q, s, empty

        q1, s1, g1 = to_marlin(w13)
        q2, s2, g2 = to_marlin(w2)
        workspace = marlin_make_workspace(q1.device, 4)

        def run(hidden, weights, ids, logits):
            return fused_marlin_moe(
                hidden, q1, q2, s1, s2, logits, weights, ids.to(torch.int32),
                g_idx1=g1, g_idx2=g2, sort_indices1=g1, sort_indices2=g2,
                workspace=workspace, num_bits=4, is_k_full=True,
            )  # fmt: skip

        self.paths["sglang marlin"] = run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=["kimi-k2", "moonlight"], default=["kimi-k2", "moonlight"]
    )
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--smoke", action="store_true", help="tiny shape on CPU (needs TRITON_INTERPRET=1)")
    parser.add_argument("--tune", action="store_true", help="sweep tile configs of our kernel instead")
    args = parser.parse_args()
    if args.smoke:
        device, shapes, tokens = torch.device("cpu"), ["smoke"], [1, 3]
        print("smoke run on CPU: checks the script, times mean nothing")
    else:
        assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
        device, shapes, tokens = torch.device("cuda"), args.shapes, args.tokens
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    started = time.time()

    for name in shapes:
        (tune_shape if args.tune else bench_shape)(name, tokens, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\ndone in {time.time() - started:.0f} s (H200 HBM3e peak is 4.8 TB/s)")


def bench_shape(name: str, tokens: list[int], device: torch.device) -> None:
    hidden_size, inter, experts, top_k = SHAPES[name]
    w13 = random_experts(experts, 2 * inter, hidden_size, device, 1)
    w2 = random_experts(experts, hidden_size, inter, device, 2)
    # The interpreter's bf16 dot is broken: the CPU smoke run computes in fp16.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    d13, d2 = w13.to_dense(dtype), w2.to_dense(dtype)  # baseline weights (dequantized, same values)
    sglang = SGLangPaths(w13, w2, hidden_size, inter, top_k)
    for path, why in sglang.errors.items():
        print(f"[{name}] {path}: skipped ({why})")
    per_expert_bytes = (w13.weight_packed[0].numel() + w2.weight_packed[0].numel()) * 4 + (
        w13.weight_scale[0].numel() + w2.weight_scale[0].numel()
    ) * 2

    columns = ["kimiweb triton", *sglang.paths, "bf16"]
    print(f"\n{name}: H={hidden_size} I={inter} E={experts} top-{top_k}, times in microseconds")
    print(
        f"{'M':>4} {'active':>6} "
        + " ".join(f"{c:>24}" for c in columns)
        + f" {'bf16/ours':>10} {'ours TB/s':>9}"
    )
    for m in tokens:
        g = torch.Generator(device=device).manual_seed(m)
        hidden = torch.randn(m, hidden_size, device=device, generator=g).to(dtype)
        logits = torch.randn(m, experts, device=device, generator=g)
        weights, ids = select_experts_softmax(logits, top_k)
        ref = reference(hidden, w13, w2, weights, ids).float()
        runs = {
            "kimiweb triton": functools.partial(
                fused_moe_w4a16, hidden, w13, w2, weights, ids, backend="triton"
            )
        }
        for path, fn in sglang.paths.items():
            runs[path] = functools.partial(fn, hidden, weights, ids, logits)
        runs["bf16"] = functools.partial(_bf16, hidden, d13, d2, weights, ids, sglang)
        times = {path: time_checked(fn, ref) for path, fn in runs.items()}
        ours, bf16 = times["kimiweb triton"][0], times["bf16"][0]
        active = int(torch.unique(ids).numel())
        cells = " ".join(f"{t:>24.1f}" if not f else f"{t:>10.1f}{f:>14}" for t, f in times.values())
        print(
            f"{m:>4} {active:>6} {cells} {bf16 / ours:>9.2f}x {active * per_expert_bytes / ours / 1e6:>9.2f}"
        )


# Candidate tiles: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages).
TUNE_CANDIDATES = [
    (16, 64, 128, 1, 4, 4),
    (16, 128, 128, 1, 4, 4),
    (16, 64, 256, 1, 4, 3),
    (16, 32, 128, 1, 4, 5),
    (32, 64, 128, 4, 4, 4),
    (64, 128, 128, 8, 8, 3),
    (64, 64, 128, 8, 4, 4),
    (128, 128, 64, 8, 8, 3),
]


def tune_shape(name: str, tokens: list[int], device: torch.device) -> None:
    """Time every candidate tile for each M; print the best (checked against the reference)."""
    hidden_size, inter, experts, top_k = SHAPES[name]
    w13 = random_experts(experts, 2 * inter, hidden_size, device, 1)
    w2 = random_experts(experts, hidden_size, inter, device, 2)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    print(f"\ntune {name}: H={hidden_size} I={inter} E={experts} top-{top_k}, microseconds per candidate")
    for m in tokens:
        g = torch.Generator(device=device).manual_seed(m)
        hidden = torch.randn(m, hidden_size, device=device, generator=g).to(dtype)
        weights, ids = select_experts_softmax(torch.randn(m, experts, device=device, generator=g), top_k)
        ref = reference(hidden, w13, w2, weights, ids).float()
        results = []
        for bm, bn, bk, gm, warps, stages in TUNE_CANDIDATES:
            if device.type != "cuda" and bk > 64:
                continue  # the interpreter is slow; the smoke run only checks the loop works
            config = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=warps, num_stages=stages)
            fn = functools.partial(fused_moe_triton, hidden, w13, w2, weights, ids, config=config)
            results.append((*time_checked(fn, ref), config))
        ok = sorted((r for r in results if not r[1]), key=lambda r: r[0])
        summary = " ".join(f"{t:.0f}" + (f[:5] if f else "") for t, f, _ in results)
        best = f"{ok[0][0]:.1f} us {ok[0][2]}" if ok else "none passed the check"
        print(f"M={m:>4}: best {best} | all: {summary}")


def time_checked(fn, ref: torch.Tensor) -> tuple[float, str]:
    """(microseconds, flag): flag says if the output is wrong or the path failed."""
    try:
        err = ((fn().float() - ref).norm() / ref.norm()).item()
        flag = "" if err < 3e-2 else f" ERR {err:.2g}"
        if ref.device.type != "cuda":
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e6, flag
        return triton.testing.do_bench(fn, warmup=10, rep=50) * 1e3, flag
    except Exception as exc:  # one failing path must not hide the others' numbers
        return float("nan"), f" FAIL {type(exc).__name__}"


def _bf16(hidden, d13, d2, weights, ids, sglang: SGLangPaths):
    """bf16 baseline: SGLang's Triton fused_experts on bf16 weights when present, else our grouped torch loop."""
    if hasattr(sglang, "_bf16_fused_experts"):
        fused_experts, topk_output, config = sglang._bf16_fused_experts
        return fused_experts(
            hidden, d13.weight, d2.weight, topk_output(weights, ids.to(torch.int32), None), config
        )
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    inter = d2.in_features
    for e in torch.unique(ids).tolist():
        rows, slots = (ids == e).nonzero(as_tuple=True)
        h = hidden[rows] @ d13.weight[e].t()
        y = (torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]) @ d2.weight[e].t()
        out.index_add_(0, rows, y.float() * weights[rows, slots, None])
    return out.to(hidden.dtype)


if __name__ == "__main__":
    main()
