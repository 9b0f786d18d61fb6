"""Builds and loads the native W4A16 CPU kernel (`w4a16_cpu.cpp` here, AVX-512 BF16 and AMX), a torch
extension.

The build runs at setup (`make setup` / `make test`, or `python -m inference.kernels.w4a16_cpu`), never on a
request: `native()` only loads a build whose name carries the hash of the source and flags, so a stale build
is never used. Without a current build, on a CPU without AVX-512 BF16, or with `KIMIWEB_MOE_CPU_KERNEL=torch`,
`native()` returns None and says why in the log once; `fused_moe_cpu` then runs torch's int4pack ops.

`many_token_crossover()` is the token count per expert from which the kernel's many-token path (AMX tiles,
or on CPUs without AMX the dequantized-tile GEMM) replaces its dot kernel. It is measured on this CPU
(`measure_crossover`, a few CPU seconds), once per CPU model and build, at setup or on first use,
and cached in var/w4a16_cpu_crossover.json; `KIMIWEB_MOE_MANY_MIN_TOKENS` overrides it.
"""

import functools
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from inference.kernels.extension import BUILD_ROOT, NativeExtension

log = logging.getLogger(__name__)

# "native" (default; falls back to torch with a log line when unavailable) or "torch" (always torch's ops).
KERNEL_ENV = "KIMIWEB_MOE_CPU_KERNEL"
EXTENSION = NativeExtension(
    stem="w4a16_cpu",
    source=Path(__file__).parent / "w4a16_cpu.cpp",
    title="W4A16 CPU kernel",
    kernel_env=KERNEL_ENV,
    fallback="using torch's int4pack ops",
    requires="AVX-512 BF16",
    log=log,
)
build_name = EXTENSION.build_name
build = EXTENSION.build
CROSSOVER_ENV = "KIMIWEB_MOE_MANY_MIN_TOKENS"
CROSSOVER_FILE = BUILD_ROOT.parent / "w4a16_cpu_crossover.json"
# Token counts tried, and the weights the measurement streams: more than a server CPU's L3, so both kernels
# read them from DRAM as a real MoE layer's experts are.
CROSSOVER_CANDIDATES = (2, 3, 4, 6, 8, 12, 16, 24, 32)
CROSSOVER_WEIGHT_BYTES = 48 << 20


@functools.cache
def native():
    """The loaded extension, or None (logged once) when it is switched off, not built, or the CPU lacks it."""
    return EXTENSION.load()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def crossover_key(kernel) -> str:
    """What the crossover depends on: the CPU model, its AMX, and the kernel build."""
    amx = "amx" if kernel.amx_supported() else "no-amx"
    return f"{_cpu_model()} | {amx} | {build_name()}"


def measure_crossover(kernel, candidates=None, weight_bytes=None) -> int:
    """The smallest candidate token count from which the many-token path beats the dot kernel at every
    larger candidate. Both run over experts of [2048, 2048] int4 weights (weight_bytes in all) on one thread,
    timed in that thread's CPU seconds (best of three, interleaved): other processes on the machine then
    change neither side, where wall time on a busy 2-core machine varied 100-fold between runs. One core
    gets more memory bandwidth than each of several, which favours the bandwidth-bound dot kernel: the
    crossover errs towards it."""
    candidates = candidates or CROSSOVER_CANDIDATES
    weight_bytes = weight_bytes or CROSSOVER_WEIGHT_BYTES
    n = k = 2048
    experts = max(2, weight_bytes // (n * k // 2 + n * k // 16))
    g = torch.Generator().manual_seed(0)
    packed = torch.randint(-(2**31), 2**31 - 1, (experts, n, k // 8), dtype=torch.int32, generator=g)
    scale = (torch.rand(experts, n, k // 32, generator=g) * 0.01 + 0.001).to(torch.bfloat16)
    pairs = [(packed[e], scale[e]) for e in range(experts)]
    many = kernel.w4a16_amx if kernel.amx_supported() else kernel.w4a16_tile

    def run(fn, x) -> float:
        start = time.thread_time()
        for p, s in pairs:
            fn(x, p, s, 32)
        return time.thread_time() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        faster = {}
        for c in candidates:
            x = torch.randn(c, k, generator=g).to(torch.bfloat16)
            dot, tile = [], []
            for _ in range(3):
                dot.append(run(kernel.w4a16_dot, x))
                tile.append(run(many, x))
            faster[c] = min(tile) < min(dot)
    finally:
        torch.set_num_threads(threads)
    crossover = candidates[-1] + 1
    for c in reversed(candidates):
        if not faster[c]:
            break
        crossover = c
    return crossover


@functools.cache
def many_token_crossover() -> int:
    """Tokens per expert from which `w4a16_linear` leaves the dot kernel: the override, else the cached
    measurement for this CPU, build and thread count, else a new measurement (cached when var/ is writable)."""
    override = os.environ.get(CROSSOVER_ENV)
    if override:
        try:
            value = int(override)
        except ValueError:
            raise ValueError(f"{CROSSOVER_ENV} must be an integer, not {override!r}") from None
        if value < 1:
            raise ValueError(f"{CROSSOVER_ENV} must be at least 1, not {value}")
        return value
    kernel = native()
    if kernel is None:
        return CROSSOVER_CANDIDATES[-1] + 1
    key = crossover_key(kernel)
    cache = _read_crossovers()
    if isinstance(cache.get(key), int):
        return cache[key]
    start = time.perf_counter()
    value = measure_crossover(kernel)
    log.info(
        "W4A16 CPU kernel: many-token path from %d tokens (%s; measured in %.1f s)",
        value,
        key,
        time.perf_counter() - start,
    )
    # Entries of older builds go: their kernels are gone.
    cache = {k: v for k, v in cache.items() if build_name() in k} | {key: value}
    try:
        CROSSOVER_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CROSSOVER_FILE.with_name(f"{CROSSOVER_FILE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        tmp.replace(CROSSOVER_FILE)
    except OSError as error:
        log.warning("W4A16 CPU kernel: cannot cache the crossover in %s (%s)", CROSSOVER_FILE, error)
    return value


def _read_crossovers() -> dict:
    try:
        data = json.loads(CROSSOVER_FILE.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("W4A16 CPU kernel: ignoring unreadable %s (%s); measuring again", CROSSOVER_FILE, error)
        return {}
    return data if isinstance(data, dict) else {}
