"""`python -m inference.kernels.decode_cpu [-v]`: build the native decode kernels (run by `make setup`)."""

import sys

from inference.kernels.decode_cpu import EXTENSION, native

if __name__ == "__main__":
    sys.exit(EXTENSION.main(native))
