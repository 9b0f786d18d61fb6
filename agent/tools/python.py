"""The `python` tool: run code in the turn's sandboxed interpreter; show the model what it printed and
which files and figures it made (stored through `ctx.files`, shown to the user)."""

from __future__ import annotations

from .base import StoredFile, Tool, ToolContext, ToolError, ToolResult, truncate
from .sandbox import (
    Limits,
    RunResult,
    SandboxUnavailable,
    end_session,
    require_sandbox,
    run_python,
    session_for,
)

LIMITS = Limits()


def run(arguments: dict, ctx: ToolContext) -> ToolResult:
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolError("`code` must be a non-empty string of Python source")
    if len(code) > 100_000:
        raise ToolError("`code` is longer than 100000 characters")
    wall = max(1.0, min(ctx.timeout, 120.0))
    try:
        require_sandbox()
        if ctx.session:
            res = session_for(ctx.session, LIMITS).run(code, wall, ctx.cancelled)
        else:
            res = run_python(code, Limits(wall_seconds=wall), ctx.cancelled)
    except SandboxUnavailable as exc:
        raise ToolError(f"the code sandbox is unavailable on this server: {exc}") from None
    stored = _store_files(res, ctx)
    parts = []
    if res.stdout:
        parts.append(res.stdout.rstrip("\n"))
    if res.stderr:
        parts.append(f"[stderr]\n{res.stderr.rstrip()}")
    for file in stored:
        parts.append(f"[file {file.name}, {_size(file.size)}, {file.content_type}: shown to the user]")
    text = "\n".join(parts) or "(no output)"
    if res.error:
        text += f"\n[{res.error}]"
    return ToolResult(truncate(text, ctx.max_chars), res.error, files=stored)


def _store_files(res: RunResult, ctx: ToolContext) -> list[StoredFile]:
    if ctx.files is None:
        return []
    return [ctx.files.save(f.name, f.data, f.content_type) for f in res.files]


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


PYTHON = Tool(
    name="python",
    description=(
        "Run Python 3.11 code in an isolated sandbox (no network, no access to the server's files) and "
        "return what it printed; the value of a final expression is printed too. numpy, pandas, "
        "matplotlib, scipy and sympy are installed (nothing else can be installed). Variables, imports "
        "and files persist across python calls within this answer and are gone afterwards. The working "
        "directory is /work (writable, 256 MiB); files saved in /work/out and every open matplotlib "
        "figure (plt.show() is not needed) are shown to the user. Limits: 1 GiB of memory for all "
        f"processes together, {LIMITS.processes} processes, {int(LIMITS.wall_seconds)} s per call; "
        "a call that breaks a limit restarts the interpreter and loses its state."
    ),
    parameters={
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python code to run (like a notebook cell)."}
        },
        "required": ["code"],
    },
    run=run,
    end_session=end_session,
)
