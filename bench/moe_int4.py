"""Benchmark: fused MoE with INT4 (W4A16) experts vs bf16 experts on CPU, and the weight bandwidth reached.

    .venv/bin/python bench/moe_int4.py [--shapes kimi-k2 moonlight] [--tokens 1 2 4 8 16 64 256 512 1024] [--threads N] [--clock cpu]

Same routing and token grouping for both; bf16 is torch matmul on dequantized experts. The two run
interleaved (int4, bf16, int4, ...; medians over the rounds, with the range of the ratio), so a load change
hits both. Bandwidth: bytes of the experts a call touches (int4 words + scales) per second, against a copy
measured in the same run. The load average (`uptime`) is printed before and after: on a shared machine
other processes make both columns noisy; `--clock cpu` (one thread, its CPU seconds) is steadier there.

Results: bench/results/moe_int4.md (newest first).
"""

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch

from inference.kernels import Int4Experts, fused_moe_w4a16, select_experts_softmax, w4a16_cpu


@dataclass
class Shape:
    name: str
    hidden: int
    inter: int
    experts: int
    top_k: int


SHAPES = {
    # Kimi K2 has 384 routed experts; 16 keep the bf16 baseline in memory (per-expert shapes are exact).
    "kimi-k2": Shape("Kimi K2 (16 of 384 experts)", 7168, 2048, 16, 8),
    "moonlight": Shape("Moonlight-16B-A3B", 2048, 1408, 64, 6),
}


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by a large tensor copy: the machine's practical bandwidth."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    best = min(_time(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() / best


# Wall-clock by default; `--clock cpu` times this thread's CPU seconds instead (with one torch thread), which
# other processes on a shared machine do not inflate: time-slicing pauses the clock along with the work.
_clock = time.perf_counter


def _time(fn) -> float:
    start = _clock()
    fn()
    return _clock() - start


def interleaved_medians(fns, min_rounds: int = 3, budget_s: float = 2.0) -> list[list[float]]:
    """Times of each fn, run in turn round after round (after one warm-up round, which also repacks)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < min_rounds or (time.perf_counter() - start < budget_s and len(times[0]) < 25):
        for fn, out in zip(fns, times, strict=True):
            out.append(_time(fn))
    return times


def random_int4_experts(e: int, n: int, k: int, group_size: int = 32, seed: int = 0) -> Int4Experts:
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(-(2**31), 2**31 - 1, (e, n, k // 8), dtype=torch.int32, generator=g)
    scale = (torch.rand(e, n, k // group_size, generator=g) * 0.01 + 0.001).to(torch.bfloat16)
    return Int4Experts(packed, scale, group_size)


def expert_bytes(experts: Int4Experts) -> int:
    per = experts.weight_packed[0].numel() * 4 + experts.weight_scale[0].numel() * 2
    return per


def run(shape: Shape, tokens: list[int], bandwidth: float) -> list[dict]:
    w13 = random_int4_experts(shape.experts, 2 * shape.inter, shape.hidden, seed=1).prepare_cpu()
    w2 = random_int4_experts(shape.experts, shape.hidden, shape.inter, seed=2).prepare_cpu()
    d13, d2 = w13.to_dense(), w2.to_dense()
    per_expert_int4 = expert_bytes(w13) + expert_bytes(w2)
    rows = []
    for m in tokens:
        rows.append(measure(shape, m, w13, w2, d13, d2, per_expert_int4, bandwidth))
        print(_format(rows[-1]), flush=True)
    return rows


def measure(shape: Shape, m: int, w13, w2, d13, d2, per_expert_int4: int, bandwidth: float) -> dict:
    g = torch.Generator().manual_seed(m)
    hidden = torch.randn(m, shape.hidden, generator=g).to(torch.bfloat16)
    weights, ids = select_experts_softmax(torch.randn(m, shape.experts, generator=g), shape.top_k)
    active = int(torch.unique(ids).numel())
    int4_times, bf16_times = interleaved_medians(
        [
            lambda: fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"),
            lambda: fused_moe_w4a16(hidden, d13, d2, weights, ids, backend="cpu"),
        ]
    )
    t_int4, t_bf16 = statistics.median(int4_times), statistics.median(bf16_times)
    ratios = [b / i for i, b in zip(int4_times, bf16_times, strict=True)]
    rate = active * per_expert_int4 / t_int4
    return dict(
        shape=shape.name,
        m=m,
        active=active,
        per_expert=m * shape.top_k / active,
        int4_ms=t_int4 * 1e3,
        bf16_ms=t_bf16 * 1e3,
        speedup=t_bf16 / t_int4,
        ratio_lo=min(ratios),
        ratio_hi=max(ratios),
        rounds=len(ratios),
        gbps=rate / 1e9,
        bw_pct=100 * rate / bandwidth,
    )


HEADER = (
    f"{'shape':<28} {'M':>4} {'experts':>7} {'tok/exp':>7} {'int4 ms':>9} {'bf16 ms':>9} "
    f"{'bf16/int4':>9} {'(range of rounds)':>17} {'int4 GB/s':>9} {'% copy BW':>9}"
)


def _format(r: dict) -> str:
    return (
        f"{r['shape']:<28} {r['m']:>4} {r['active']:>7} {r['per_expert']:>7.1f} {r['int4_ms']:>9.2f} "
        f"{r['bf16_ms']:>9.2f} {r['speedup']:>8.2f}x {r['ratio_lo']:>6.2f}-{r['ratio_hi']:.2f} x{r['rounds']:<3} "
        f"{r['gbps']:>9.1f} {r['bw_pct']:>8.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 2, 4, 8, 16, 64, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this thread's CPU time, one torch thread",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        global _clock
        _clock = time.thread_time
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)

    bandwidth = copy_bandwidth()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"clock: {args.clock}; copy bandwidth (read + write): {bandwidth / 1e9:.1f} GB/s")
    kernel = w4a16_cpu.native()
    if kernel is None:
        kernel_name = "torch int4pack"
    else:
        many = "AMX tiles" if kernel.amx_supported() else "dequantized-tile GEMM, no AMX"
        kernel_name = f"native: dot kernel, {many} from {w4a16_cpu.many_token_crossover()} tokens per expert"
    print(f"load average before: {_load()}")
    print(
        f"int4 = fused_moe_w4a16 backend=cpu on Int4Experts ({kernel_name}); bf16 = the same call on DenseExperts"
    )
    print(HEADER)
    for name in args.shapes:
        run(SHAPES[name], args.tokens, bandwidth)
    print(f"load average after: {_load()}")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
