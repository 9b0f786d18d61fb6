"""The tool registry: every tool the model may call, by name, with its OpenAI function schema.

`get_tool(name).run(arguments, ToolContext())` runs one; what a tool needs from the host application
(the local corpus for `web_search`'s `local` backend and `browse`, the search settings, a file sink,
the conversation's files) comes in the `ToolContext`. `tools_for(ctx)` is the set a turn declares:
TOOLS, plus the file tools when the conversation has files.
"""

from __future__ import annotations

from .base import SearchSettings, Tool, ToolContext, ToolError, ToolResult, truncate
from .browse import BROWSE
from .files import FILE_TOOLS
from .python import PYTHON
from .web_search import WEB_SEARCH

TOOLS: dict[str, Tool] = {tool.name: tool for tool in (WEB_SEARCH, BROWSE, PYTHON)}


def get_tool(name: str) -> Tool:
    return TOOLS[name]


def tools_for(ctx: ToolContext | None) -> dict[str, Tool]:
    """The tools a turn declares: the default TOOLS, and the file tools only when files are attached."""
    if ctx is None or ctx.files_library is None:
        return TOOLS
    return {**TOOLS, **FILE_TOOLS}


def tool_schemas(names=None) -> list[dict]:
    return [tool.schema() for name, tool in TOOLS.items() if names is None or name in names]


__all__ = [
    "FILE_TOOLS",
    "TOOLS",
    "SearchSettings",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "get_tool",
    "tool_schemas",
    "tools_for",
    "truncate",
]
