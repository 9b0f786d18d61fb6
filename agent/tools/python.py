"""The `python` tool: run a short program in the sandbox and show the model what it printed."""

from __future__ import annotations

import signal

from .base import Tool, ToolContext, ToolError, ToolResult, truncate
from .sandbox import Limits, run_python


def run(arguments: dict, ctx: ToolContext) -> ToolResult:
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolError("`code` must be a non-empty string of Python source")
    if len(code) > 100_000:
        raise ToolError("`code` is longer than 100000 characters")
    wall = max(1.0, min(ctx.timeout, 60.0))
    # CPU time under half the wall time, so a busy loop is reported as such even on a loaded machine.
    limits = Limits(wall_seconds=wall, cpu_seconds=max(1, min(10, int(wall / 2))))
    res = run_python(code, limits, ctx.cancelled)
    parts = []
    if res.stdout:
        parts.append(res.stdout.rstrip("\n"))
    if res.stderr:
        parts.append(f"[stderr]\n{res.stderr.rstrip()}")
    error = ""
    if res.cancelled:
        error = "stopped by the user"
    elif res.timed_out:
        error = f"timed out after {limits.wall_seconds:.0f} s (wall clock)"
    elif res.flooded:
        error = "killed: the program printed too much output"
    elif res.returncode == -signal.SIGXCPU:
        error = f"killed: CPU time limit ({limits.cpu_seconds} s) exceeded"
    elif res.returncode and res.returncode < 0:
        error = f"killed by signal {-res.returncode}"
    elif res.returncode:
        error = f"exited with status {res.returncode}"
    text = "\n".join(parts) or "(no output)"
    if error:
        text += f"\n[{error}]"
    return ToolResult(truncate(text, ctx.max_chars), error)


PYTHON = Tool(
    name="python",
    description=(
        "Run a Python 3 program in an isolated sandbox (no network, read-only filesystem except /tmp, "
        "10 s CPU, 1 GiB memory) and return what it printed. Use print() for results. Only the standard library is guaranteed."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The complete Python program to run."}},
        "required": ["code"],
    },
    run=run,
)
