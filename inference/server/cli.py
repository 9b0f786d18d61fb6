"""`python -m inference serve`: load the model and serve the OpenAI-compatible API (backend `cpu`),
or hand over to SGLang's server with our INT4 MoE plugin (backend `sglang`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="checkpoint directory, .gguf file, or 'default'")
    parser.add_argument("--backend", choices=["cpu", "sglang"], default="cpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument(
        "--served-model-name", default=None, help="the name clients use (alias 'default' always works)"
    )
    # bf16 measured ~1.8x faster than fp32 for SmolLM2 decode on this CPU (AVX512-BF16).
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument(
        "--kv-cache-tokens", type=int, default=65536, help="KV cache capacity in tokens (the memory bound)"
    )
    parser.add_argument("--max-running", type=int, default=32, help="most requests decoded together")
    parser.add_argument(
        "--max-waiting", type=int, default=256, help="queue length beyond which requests get 503"
    )
    parser.add_argument("--no-prefix-cache", action="store_true", help="recompute every prompt in full")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument(
        "--weight-cache", default=None, help="folder for dequantized GGUF weights (faster restarts)"
    )
    parser.add_argument("--tp", type=int, default=1, help="sglang: tensor parallel size")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(func=run)


def sglang_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The SGLang launch command and its environment (our plugin enabled) for GPU hosts."""
    from inference.engine.loader import resolve_model_path

    model = str(resolve_model_path(args.model)) if args.model == "default" else args.model
    cmd = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--tool-call-parser",
        "kimi_k2",
        "--reasoning-parser",
        "kimi_k2",
        "--trust-remote-code",
        "--tp-size",
        str(args.tp),
    ]
    if args.served_model_name:
        cmd += ["--served-model-name", args.served_model_name]
    from inference.sglang.plugin import ENABLE_ENV

    env = dict(os.environ)
    # SGLang loads entry points of group `sglang.srt.plugins` (ours: inference.sglang.plugin:register);
    # the plugin only swaps in our INT4 MoE kernel when this variable is on.
    env[ENABLE_ENV] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return cmd, env


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.backend == "sglang":
        cmd, env = sglang_command(args)
        logging.getLogger(__name__).info("exec %s", " ".join(cmd))
        os.execvpe(cmd[0], cmd, env)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import uvicorn

    from inference.engine.llm_engine import LLMEngine
    from inference.engine.loader import load_model, resolve_model_path
    from inference.server.app import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    loaded = load_model(resolve_model_path(args.model), dtype, cache_dir=args.weight_cache)
    engine = LLMEngine(
        loaded,
        kv_cache_tokens=args.kv_cache_tokens,
        max_running=args.max_running,
        max_waiting=args.max_waiting,
        dtype=dtype,
        prefix_cache=not args.no_prefix_cache,
    )
    app = create_app(engine, args.served_model_name or loaded.name)
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level.lower(), timeout_graceful_shutdown=3
        )
    finally:
        engine.shutdown()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.server.cli")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
