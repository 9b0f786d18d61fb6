"""`python -m inference.kernels.w4a16_cpu [-v]`: build the native kernel and measure its crossover (run by
`make setup`/`make test`)."""

import sys

from inference.kernels.w4a16_cpu import EXTENSION, log, many_token_crossover, native


def measure_now() -> None:
    # Measured at setup rather than on a server's first request.
    log.info("W4A16 CPU kernel: many-token path from %d tokens per expert", many_token_crossover())


if __name__ == "__main__":
    sys.exit(EXTENSION.main(native, after=measure_now))
