"""`python -m inference serve --backend sglang` hands over to SGLang with Kimi K2 parsers and our plugin."""

import argparse

from inference.server import cli


def parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_defaults_to_the_cpu_backend_on_port_30000():
    args = parse()
    assert (args.backend, args.port, args.model, args.func) == ("cpu", 30000, "default", cli.run)


def test_sglang_command_enables_kimi_k2_parsers_and_the_int4_moe_plugin(tmp_path):
    args = parse(
        "--backend", "sglang", "--model", str(tmp_path), "--port", "30001", "--tp", "8", "--host", "0.0.0.0"
    )
    cmd, env = cli.sglang_command(args)
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    joined = " ".join(cmd)
    for part in (
        f"--model-path {tmp_path}",
        "--tool-call-parser kimi_k2",
        "--reasoning-parser kimi_k2",
        "--trust-remote-code",
        "--port 30001",
        "--host 0.0.0.0",
        "--tp-size 8",
    ):
        assert part in joined
    assert env["KIMIWEB_INT4_MOE"] == "1"
