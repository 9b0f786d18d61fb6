"""`python -m inference.kernels.w4a16_cpu [-v]`: build the native kernel (run by `make setup`/`make test`)."""

import logging
import sys

from inference.kernels.w4a16_cpu import BUILD_ROOT, build, build_name, log, native


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
