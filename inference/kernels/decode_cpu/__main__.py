"""`python -m inference.kernels.decode_cpu [-v]`: build the native decode kernels (run by `make setup`)."""

import logging
import sys

from inference.kernels.decode_cpu import BUILD_ROOT, build, build_name, log, native


def main() -> int:
    """Build at setup. A failed build is reported (exit status 1; `make` goes on) and leaves torch's path."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(verbose="-v" in sys.argv)
    except Exception as error:  # a compiler error, a missing ninja or g++: the torch path still works
        log.error("native decode kernel build failed, GGUF models will run dequantized in torch: %s", error)
        return 1
    native.cache_clear()
    log.info("native decode kernel built: %s", BUILD_ROOT / build_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
