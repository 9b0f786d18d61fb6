"""The one event format of kimiweb: what the agent loop yields, the worker publishes, and the browser sees.

The loop (`agent/loop.py`) yields `Event`s without sequence numbers; `agent/stream.py` stamps each
with its turn and a per-turn `seq` and owns how they travel (the Redis stream, the Channels batch).
On the wire an event is a flat JSON object: `{"seq": 7, "turn": "<uuid>", "type": "reasoning.delta",
"text": "..."}`; `event_from_dict` turns that back into the typed event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self, **stamp: Any) -> dict:
        """The wire form; `stamp` adds `seq` and `turn`."""
        return {**stamp, "type": self.type, **asdict(self)}


@dataclass
class TurnStarted(Event):
    type: ClassVar[str] = "turn.started"
    thinking: bool = True
    model: str = ""


@dataclass
class StepStarted(Event):
    type: ClassVar[str] = "step.started"
    index: int = 0


@dataclass
class ReasoningDelta(Event):
    type: ClassVar[str] = "reasoning.delta"
    text: str = ""


@dataclass
class ContentDelta(Event):
    type: ClassVar[str] = "content.delta"
    text: str = ""


@dataclass
class ToolCallStarted(Event):
    """The model began a tool call (its name is known; arguments are still streaming)."""

    type: ClassVar[str] = "tool.started"
    call_id: str = ""
    index: int = 0
    name: str = ""


@dataclass
class ToolCallArguments(Event):
    type: ClassVar[str] = "tool.arguments"
    call_id: str = ""
    delta: str = ""


@dataclass
class ToolCallRunning(Event):
    """The model finished writing the call; the tool is now executing."""

    type: ClassVar[str] = "tool.running"
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ToolCallFinished(Event):
    type: ClassVar[str] = "tool.finished"
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    result: str = ""
    status: str = "done"  # done | error | cancelled
    error: str = ""
    duration_ms: int = 0
    files: list[dict] = field(default_factory=list)  # files the tool made: id, name, size, content_type, url


@dataclass
class StepFinished(Event):
    type: ClassVar[str] = "step.finished"
    index: int = 0
    finish_reason: str = ""
    usage: dict = field(default_factory=dict)


@dataclass
class TurnFinished(Event):
    """The final answer is complete. `status` is done, failed or cancelled; `error` is user-readable."""

    type: ClassVar[str] = "turn.finished"
    status: str = "done"
    error: str = ""
    content: str = ""
    reasoning: str = ""


@dataclass
class TurnStatus(Event):
    """A line for the turn's status while it waits on something, e.g. the model server ("" clears it).

    Not part of the answer: the page shows it, Postgres does not keep it."""

    type: ClassVar[str] = "turn.status"
    text: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        TurnStarted,
        StepStarted,
        ReasoningDelta,
        ContentDelta,
        ToolCallStarted,
        ToolCallArguments,
        ToolCallRunning,
        ToolCallFinished,
        StepFinished,
        TurnFinished,
        TurnStatus,
    )
}


def event_from_dict(data: dict) -> Event:
    """Rebuild an event from its wire form (dropping the `seq`/`turn` stamp); KeyError for an unknown type."""
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
