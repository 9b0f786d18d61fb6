"""What a tool is: a name, the JSON schema the model sees, and a plain `run(arguments, ctx)` function.

Tools take no Django objects and return a `ToolResult`, so the model engineer's trace generator can
call them directly (`get_tool("python").run({"code": "print(1)"}, ToolContext())`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..corpus import Corpus
from ..files import FileLibrary


class ToolError(Exception):
    """A failure the model should read about (bad arguments, a refused URL, a timeout)."""


@dataclass
class ToolResult:
    text: str
    error: str = ""  # empty when the tool succeeded; else a short, model-readable reason
    files: list[StoredFile] = field(default_factory=list)  # stored through ToolContext.files

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class StoredFile:
    """A file a tool produced, as the host application stored it (what the user can open)."""

    id: str  # the host's public id (a UUID string)
    name: str
    size: int
    content_type: str
    url: str = ""  # where its owner downloads it


class FileSink(Protocol):
    """Where tools put files they produce (figures, CSVs); the host stores them durably, owner-only."""

    def save(self, name: str, data: bytes, content_type: str) -> StoredFile: ...


@dataclass(frozen=True)
class SearchSettings:
    """Which search service `web_search` asks, and its address or key (`local` searches `ToolContext.corpus`)."""

    backend: str = "local"  # local | searxng | brave | tavily
    searxng_url: str = "http://127.0.0.1:8080"
    brave_api_key: str = ""
    tavily_api_key: str = ""


@dataclass
class ToolContext:
    """What a running tool may consult: a cancel flag (set on Stop), its wall-clock budget, and what the
    host application injects: the local corpus, the search settings, where produced files go, a key
    for per-turn state, and the conversation's attached files (None when it has none)."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    timeout: float = 30.0
    max_chars: int = 8000  # the result is truncated to this many characters
    corpus: Corpus | None = None
    search: SearchSettings = field(default_factory=SearchSettings)
    files: FileSink | None = None
    session: str = ""  # the turn's id: tools that keep state (the python interpreter) key it by this
    files_library: FileLibrary | None = None  # the file tools are declared only when this is set


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    run: Callable[[dict, ToolContext], ToolResult]
    # Ends whatever the tool keeps for a session (ToolContext.session); the host calls it when a turn ends.
    end_session: Callable[[str], None] | None = None

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
