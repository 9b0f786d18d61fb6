"""Builds and loads the native decode kernels (`decode_cpu.cpp` here, AVX-512 VNNI): a whole Llama forward
pass in one call over GGUF weights kept quantized (Q4_0, Q4_1, Q8_0), a torch extension.

Built at setup (`make setup` / `make test`, or `python -m inference.kernels.decode_cpu`), never on a request:
`native()` only loads a build whose name carries the hash of the source and flags. Without a current build,
on a CPU without AVX-512 VNNI, or with `KIMIWEB_DECODE_KERNEL=torch`, `native()` returns None and says why
in the log once; the engine then serves GGUF models dequantized through torch.
"""

import functools
import logging
from pathlib import Path

from inference.kernels.extension import NativeExtension

log = logging.getLogger(__name__)

# "native" (default; falls back to torch with a log line when unavailable) or "torch".
KERNEL_ENV = "KIMIWEB_DECODE_KERNEL"
EXTENSION = NativeExtension(
    stem="decode_cpu",
    source=Path(__file__).parent / "decode_cpu.cpp",
    title="native decode kernel",
    kernel_env=KERNEL_ENV,
    fallback="GGUF weights are dequantized for torch",
    requires="AVX-512 VNNI",
    log=log,
)
build_name = EXTENSION.build_name
build = EXTENSION.build

Q4, Q8 = 0, 1  # the kernel's weight kinds


@functools.cache
def native():
    """The loaded extension, or None (logged once) when switched off, not built, or the CPU lacks VNNI."""
    return EXTENSION.load()
