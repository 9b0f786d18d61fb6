"""The one event format of kimiweb: what the agent loop yields, the worker publishes, and the browser sees.

The loop (`agent/loop.py`) yields `Event`s without sequence numbers. The worker stamps each with a
per-turn `seq` (1, 2, 3, ... contiguous), appends it to the Redis stream `turn:<uuid>:events` under
the entry id `<seq>-0` (so replay from a sequence number is `XRANGE key (<seq>-0 +`), and
`group_send`s it to the conversation's Channels group — batched, as `{"type": "turn.events", "events":
[{...}, ...]}` (a single event may also come as `{"type": "turn.event", "event": {...}}`).
On the wire an event is a flat JSON object: `{"seq": 7, "turn": "<uuid>", "type": "reasoning.delta",
"text": "..."}`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

STREAM_FIELD = "e"  # the one field of each Redis stream entry: the event as JSON


def stream_key(turn_uuid) -> str:
    return f"turn:{turn_uuid}:events"


def cancel_key(turn_uuid) -> str:
    return f"turn:{turn_uuid}:cancel"


def group_name(conversation_uuid) -> str:
    """The Channels group every socket watching a conversation joins."""
    return f"conversation.{conversation_uuid}"


@dataclass
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self, **stamp: Any) -> dict:
        """The wire form; `stamp` adds `seq` and `turn`."""
        return {**stamp, "type": self.type, **asdict(self)}

    def to_json(self, **stamp: Any) -> str:
        return json.dumps(self.to_dict(**stamp), ensure_ascii=False, separators=(",", ":"))


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
    )
}


def event_from_dict(data: dict) -> Event:
    """Rebuild an event from its wire form (dropping the `seq`/`turn` stamp)."""
    cls = EVENT_TYPES[data["type"]]
    names = cls.__dataclass_fields__.keys()
    return cls(**{k: v for k, v in data.items() if k in names})
