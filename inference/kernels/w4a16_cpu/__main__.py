"""`python -m inference.kernels.w4a16_cpu [-v]`: build the native kernel and measure its crossover (run by
`make setup`/`make test`)."""

import logging
import sys

from inference.kernels.w4a16_cpu import BUILD_ROOT, build, build_name, log, many_token_crossover, native


def main() -> int:
    """Build at setup. A failed build is reported (exit status 1; `make` goes on) and leaves torch's ops."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(verbose="-v" in sys.argv)
    except Exception as error:  # a compiler error, a missing ninja or g++: the torch path still works
        log.error("W4A16 CPU kernel build failed, torch's int4pack ops will be used: %s", error)
        return 1
    native.cache_clear()
    log.info("W4A16 CPU kernel built: %s", BUILD_ROOT / build_name())
    if native() is not None:
        # Measured now, at setup, rather than on a server's first request.
        log.info("W4A16 CPU kernel: many-token path from %d tokens per expert", many_token_crossover())
    return 0


if __name__ == "__main__":
    sys.exit(main())
