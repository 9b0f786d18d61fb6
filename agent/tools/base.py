"""What a tool is: a name, the JSON schema the model sees, and a plain `run(arguments, ctx)` function.

Tools take no Django objects and return a `ToolResult`, so the model engineer's trace generator can
call them directly (`get_tool("python").run({"code": "print(1)"}, ToolContext())`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class ToolError(Exception):
    """A failure the model should read about (bad arguments, a refused URL, a timeout)."""


@dataclass
class ToolResult:
    text: str
    error: str = ""  # empty when the tool succeeded; else a short, model-readable reason

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class ToolContext:
    """What a running tool may consult: a cancel flag (set on Stop) and its wall-clock budget."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    timeout: float = 30.0
    max_chars: int = 8000  # the result is truncated to this many characters


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    run: Callable[[dict, ToolContext], ToolResult]

    def schema(self) -> dict:
        """The OpenAI `tools=[...]` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def truncate(text: str, limit: int) -> str:
    """Keep the head and a little of the tail; say how much was cut so the model knows."""
    if len(text) <= limit:
        return text
    tail = min(limit // 5, 1000)
    head = limit - tail
    return f"{text[:head]}\n\n[... {len(text) - head - tail} characters truncated ...]\n\n{text[-tail:] if tail else ''}"
