"""Builds and loads the native W4A16 CPU kernel (`csrc/w4a16_cpu.cpp`, AVX-512 BF16) as a torch extension.

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
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "w4a16_cpu.cpp"
BUILD_ROOT = Path(__file__).resolve().parents[2] / "var" / "torch_extensions"
CFLAGS = ["-O3", "-std=c++17"]
# "native" (default; falls back to torch with a log line when unavailable) or "torch" (always torch's ops).
KERNEL_ENV = "KIMIWEB_MOE_CPU_KERNEL"


def _name() -> str:
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode() + torch.__version__.encode())
    return f"w4a16_cpu_{digest.hexdigest()[:12]}"


def build(verbose: bool = False):
    """Compile the extension into var/torch_extensions (a no-op when the current build exists) and load it."""
    from torch.utils.cpp_extension import load

    name = _name()
    directory = BUILD_ROOT / name
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=CFLAGS,
        build_directory=str(directory),
        verbose=verbose,
    )


@functools.cache
def native():
    """The loaded extension, or None (logged once) when it is switched off, not built, or the CPU lacks it."""
    if os.environ.get(KERNEL_ENV, "native") == "torch":
        log.info("W4A16 CPU kernel: torch int4pack ops (%s=torch)", KERNEL_ENV)
        return None
    name = _name()
    library = BUILD_ROOT / name / f"{name}.so"
    if not library.exists():
        log.warning(
            "W4A16 CPU kernel not built (%s missing); using torch's int4pack ops. "
            "Build it with `make setup` or `python -m inference.kernels.w4a16_cpu`.",
            library,
        )
        return None
    import torch  # noqa: F401  (the extension links against torch's libraries)

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


def main() -> int:
    """Build at setup; a failed build is reported and leaves the torch fallback in place (exit status 0)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(verbose="-v" in sys.argv)
    except Exception as error:  # a compiler error, a missing ninja or g++: the torch path still works
        log.error("W4A16 CPU kernel build failed, torch's int4pack ops will be used: %s", error)
        return 0
    native.cache_clear()
    log.info("W4A16 CPU kernel built: %s", BUILD_ROOT / _name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
