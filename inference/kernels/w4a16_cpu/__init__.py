"""Builds and loads the native W4A16 CPU kernel (`w4a16_cpu.cpp` here, AVX-512 BF16 and AMX), a torch
extension.

The build runs at setup (`make setup` / `make test`, or `python -m inference.kernels.w4a16_cpu`), never on a
request: `native()` only loads a build whose name carries the hash of the source and flags, so a stale build
is never used. Without a current build, on a CPU without AVX-512 BF16, or with `KIMIWEB_MOE_CPU_KERNEL=torch`,
`native()` returns None and says why in the log once; `fused_moe_cpu` then runs torch's int4pack ops.
"""

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "w4a16_cpu.cpp"
BUILD_ROOT = Path(__file__).resolve().parents[3] / "var" / "torch_extensions"
# -fopenmp: at::parallel_for in the kernel is OpenMP (torch's backend); without the flag it runs on one thread.
CFLAGS = ["-O3", "-std=c++17", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
# "native" (default; falls back to torch with a log line when unavailable) or "torch" (always torch's ops).
KERNEL_ENV = "KIMIWEB_MOE_CPU_KERNEL"


def build_name() -> str:
    digest = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(CFLAGS + LDFLAGS).encode() + torch.__version__.encode()
    )
    return f"w4a16_cpu_{digest.hexdigest()[:12]}"


def build(verbose: bool = False):
    """Compile the extension into var/torch_extensions (a no-op when the current build exists) and load it."""
    from torch.utils.cpp_extension import load

    name = build_name()
    directory = BUILD_ROOT / name
    for stale in BUILD_ROOT.glob("w4a16_cpu_*"):
        if stale != directory:
            shutil.rmtree(stale, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=name,
        sources=[str(SOURCE)],
        # Copies: load() appends to the lists it is given, which would change build_name().
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(directory),
        verbose=verbose,
    )


@functools.cache
def native():
    """The loaded extension, or None (logged once) when it is switched off, not built, or the CPU lacks it."""
    if os.environ.get(KERNEL_ENV, "native") == "torch":
        log.info("W4A16 CPU kernel: torch int4pack ops (%s=torch)", KERNEL_ENV)
        return None
    name = build_name()
    library = BUILD_ROOT / name / f"{name}.so"
    if not library.exists():
        log.warning(
            "W4A16 CPU kernel not built (%s missing); using torch's int4pack ops. "
            "Build it with `make setup` or `python -m inference.kernels.w4a16_cpu`.",
            library,
        )
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        log.warning("W4A16 CPU kernel failed to load (%s); using torch's int4pack ops", error)
        return None
    if not module.cpu_supported():
        log.warning("W4A16 CPU kernel needs AVX-512 BF16, which this CPU lacks; using torch's int4pack ops")
        return None
    return module
