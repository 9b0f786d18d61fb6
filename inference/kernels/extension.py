"""A native torch extension built at setup and loaded only when current: the build machinery the CPU
kernels (`w4a16_cpu/`, `decode_cpu/`) share.

A build's name carries the hash of its source, flags and torch version, so a stale build is never loaded;
`load()` returns None and says why in the log (switched off, not built, failed to load, CPU lacks the
instructions) and the caller falls back to torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

BUILD_ROOT = Path(__file__).resolve().parents[2] / "var" / "torch_extensions"
# -fopenmp: the kernels parallelise with OpenMP (torch's backend); without the flag they run on one thread.
CFLAGS = ("-O3", "-std=c++17", "-fopenmp")
LDFLAGS = ("-fopenmp",)


@dataclass(frozen=True)
class NativeExtension:
    stem: str  # the build's name before its hash, and the module's
    source: Path
    title: str  # how the log names it: "W4A16 CPU kernel"
    kernel_env: str  # set to "torch" to switch the extension off
    fallback: str  # what runs instead: "using torch's int4pack ops"
    requires: str  # the instructions `cpu_supported()` checks: "AVX-512 BF16"
    log: logging.Logger
    build_root: Path = BUILD_ROOT

    def build_name(self) -> str:
        digest = hashlib.sha256(
            self.source.read_bytes() + " ".join(CFLAGS + LDFLAGS).encode() + torch.__version__.encode()
        )
        return f"{self.stem}_{digest.hexdigest()[:12]}"

    def build(self, verbose: bool = False):
        """Compile into var/torch_extensions (a no-op when the current build exists) and load it."""
        from torch.utils.cpp_extension import load

        name = self.build_name()
        directory = self.build_root / name
        for stale in self.build_root.glob(f"{self.stem}_*"):
            if stale != directory:
                shutil.rmtree(stale, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        return load(
            name=name,
            sources=[str(self.source)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(directory),
            verbose=verbose,
        )

    def load(self):
        """The loaded extension, or None (with a log line) when switched off, not built, or unsupported."""
        if os.environ.get(self.kernel_env, "native") == "torch":
            self.log.info("%s: switched off (%s=torch); %s", self.title, self.kernel_env, self.fallback)
            return None
        name = self.build_name()
        library = self.build_root / name / f"{name}.so"
        if not library.exists():
            self.log.warning(
                "%s not built (%s missing); %s. Build it with `make setup` or `python -m %s`.",
                self.title,
                library,
                self.fallback,
                self.log.name,
            )
            return None
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError as error:
            self.log.warning("%s failed to load (%s); %s", self.title, error, self.fallback)
            return None
        if not module.cpu_supported():
            self.log.warning(
                "%s needs %s, which this CPU lacks; %s", self.title, self.requires, self.fallback
            )
            return None
        return module

    def main(self, native: Callable, after: Callable[[], None] | None = None) -> int:
        """`python -m <package> [-v]` at setup: build, then `after()` once the build loads. A failed build
        is reported (exit status 1; `make` goes on) and leaves the torch path."""
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            self.build(verbose="-v" in sys.argv)
        except Exception as error:  # a compiler error, a missing ninja or g++: the torch path still works
            self.log.error("%s build failed; %s: %s", self.title, self.fallback, error)
            return 1
        native.cache_clear()
        self.log.info("%s built: %s", self.title, self.build_root / self.build_name())
        if after is not None and native() is not None:
            after()
        return 0
