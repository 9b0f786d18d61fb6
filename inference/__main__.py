"""`python -m inference <command>`: serve the model API, or convert a checkpoint to INT4."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m inference")
    sub = parser.add_subparsers(dest="command", required=True)

    from inference.quant import convert
    from inference.server import cli as server_cli

    server_cli.add_arguments(sub.add_parser("serve", help="serve the OpenAI-compatible model API"))
    convert.add_arguments(sub.add_parser("quantize", help="convert a bf16 MoE checkpoint to INT4 (W4A16)"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
