"""Builds and loads the native decode kernels (`decode_cpu.cpp` here, AVX-512 VNNI): a whole Llama forward
pass in one call over GGUF weights kept quantized (Q4_0, Q4_1, Q8_0), a torch extension.

Built at setup (`make setup` / `make test`, or `python -m inference.kernels.decode_cpu`), never on a request:
`native()` only loads a build whose name carries the hash of the source and flags. Without a current build,
on a CPU without AVX-512 VNNI, or with `KIMIWEB_DECODE_KERNEL=torch`, `native()` returns None and says why
in the log once; the engine then serves GGUF models dequantized through torch.
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

SOURCE = Path(__file__).parent / "decode_cpu.cpp"
BUILD_ROOT = Path(__file__).resolve().parents[3] / "var" / "torch_extensions"
# -fopenmp: the forward pass is one OpenMP parallel region on torch's OpenMP runtime.
CFLAGS = ["-O3", "-std=c++17", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
# "native" (default; falls back to torch with a log line when unavailable) or "torch".
KERNEL_ENV = "KIMIWEB_DECODE_KERNEL"

Q4, Q8 = 0, 1  # the kernel's weight kinds


def build_name() -> str:
    digest = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(CFLAGS + LDFLAGS).encode() + torch.__version__.encode()
    )
    return f"decode_cpu_{digest.hexdigest()[:12]}"


def build(verbose: bool = False):
    """Compile into var/torch_extensions (a no-op when the current build exists) and load it."""
    from torch.utils.cpp_extension import load

    name = build_name()
    directory = BUILD_ROOT / name
    for stale in BUILD_ROOT.glob("decode_cpu_*"):
        if stale != directory:
            shutil.rmtree(stale, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(directory),
        verbose=verbose,
    )


@functools.cache
def native():
    """The loaded extension, or None (logged once) when switched off, not built, or the CPU lacks VNNI."""
    if os.environ.get(KERNEL_ENV, "native") == "torch":
        log.info("decode kernel: torch (%s=torch)", KERNEL_ENV)
        return None
    name = build_name()
    library = BUILD_ROOT / name / f"{name}.so"
    if not library.exists():
        log.warning(
            "native decode kernel not built (%s missing); GGUF weights are dequantized for torch. "
            "Build it with `make setup` or `python -m inference.kernels.decode_cpu`.",
            library,
        )
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        log.warning("native decode kernel failed to load (%s); GGUF weights are dequantized for torch", error)
        return None
    if not module.cpu_supported():
        log.warning("native decode kernel needs AVX-512 VNNI, which this CPU lacks; using torch")
        return None
    return module
