"""The turn-event stream: the one place that reads and writes a turn's events and its cancel flag in
Redis, and the one Channels message that carries events live.

Each turn has a capped Redis stream whose entries have the ids `<seq>-0` (seq 1, 2, 3, ...
contiguous across worker restarts) and one field `e`, the event's wire form as JSON:
`{"seq": 7, "turn": "<uuid>", "type": "reasoning.delta", "text": "..."}`. Replay from a sequence
number is `XRANGE key (<seq>-0 +`. Live delivery is one Channels message type, a batch in seq
order: `{"type": "turn.events", "events": [<wire>, ...]}`.

Every key and group name carries the installation's namespace (`Keys`), so two installations
sharing one Redis never see each other's turns. Redis clients are passed in; the host application
makes them (kimiweb: `chat/redis.py`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from .events import Event, event_from_dict

log = logging.getLogger(__name__)

STREAM_FIELD = "e"  # the one field of each stream entry: the event as JSON
MESSAGE_TYPE = "turn.events"  # the one Channels message type: a batch of wire events in seq order
CANCEL_TTL = 24 * 3600  # a cancel flag outlives any turn, then disappears on its own
EVENTS_MAXLEN = 100_000  # entries a stream keeps (approximately); replay rebuilds older ones from Postgres
EVENTS_TTL = 24 * 3600  # how long a finished turn's stream stays for replay
LIVE_TTL = 7 * 24 * 3600  # a stream whose worker died without finishing still expires
READ_BATCH = 1000

NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")  # what a Channels group name allows, short


@dataclass(frozen=True)
class Keys:
    """The Redis keys and Channels group names of one installation (its namespace)."""

    namespace: str

    def __post_init__(self):
        if not NAMESPACE_PATTERN.match(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} must be 1-40 characters of letters, digits, '_', '.' or '-'"
            )

    def stream(self, turn_uuid) -> str:
        return f"{self.namespace}:turn:{turn_uuid}:events"

    def cancel(self, turn_uuid) -> str:
        return f"{self.namespace}:turn:{turn_uuid}:cancel"

    def group(self, conversation_uuid) -> str:
        """The Channels group every socket watching a conversation joins."""
        return f"{self.namespace}.conversation.{conversation_uuid}"


@dataclass(frozen=True)
class StreamEvent:
    """An event as it was published: its per-turn sequence number, its turn, and the typed event."""

    seq: int
    turn: str
    event: Event


def wire(event: Event, seq: int, turn_uuid) -> dict:
    """The JSON-ready form of a published event (what the stream stores and the browser's socket gets)."""
    return event.to_dict(seq=seq, turn=str(turn_uuid))


def decode(data: dict) -> StreamEvent:
    """A wire dict back into its typed event; raises KeyError/TypeError for anything else."""
    return StreamEvent(seq=int(data["seq"]), turn=str(data["turn"]), event=event_from_dict(data))


def live_message(wired: list[dict]) -> dict:
    """The Channels message that carries a batch of published events to a conversation's sockets."""
    return {"type": MESSAGE_TYPE, "events": wired}


def _seq_of(entry_id) -> int:
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.split("-", 1)[0])


def _decode_entry(entry_id, fields: dict) -> StreamEvent:
    raw = fields.get(STREAM_FIELD, fields.get(STREAM_FIELD.encode()))
    data = json.loads(raw)
    data.setdefault("seq", _seq_of(entry_id))
    return decode(data)


def _range(after: int, until: int | None) -> tuple[str, str]:
    return f"({int(after)}-0", f"{int(until)}-0" if until is not None else "+"


class TurnStream:
    """One turn's events in Redis, through a synchronous client (the worker, services, tests)."""

    def __init__(self, client: redis.Redis, keys: Keys, turn_uuid, *, maxlen: int = EVENTS_MAXLEN):
        self.redis = client
        self.turn = str(turn_uuid)
        self.key = keys.stream(turn_uuid)
        self.maxlen = maxlen

    def last_seq(self) -> int:
        last = self.redis.xrevrange(self.key, count=1)
        return _seq_of(last[0][0]) if last else 0

    def append(self, events: Iterable[Event], after: int) -> list[dict]:
        """Append the events as seqs after+1, after+2, ... in one round trip; return their wire forms."""
        wired = [wire(event, after + i, self.turn) for i, event in enumerate(events, 1)]
        pipe = self.redis.pipeline(transaction=False)
        for data in wired:
            pipe.xadd(
                self.key,
                {STREAM_FIELD: json.dumps(data, ensure_ascii=False, separators=(",", ":"))},
                id=f"{data['seq']}-0",
                maxlen=self.maxlen,
                approximate=True,
            )
        pipe.execute()
        return wired

    def read(self, after: int = 0, until: int | None = None) -> list[StreamEvent]:
        start, end = _range(after, until)
        out: list[StreamEvent] = []
        while True:
            entries = self.redis.xrange(self.key, min=start, max=end, count=READ_BATCH)
            out.extend(_decode_entry(entry_id, fields) for entry_id, fields in entries)
            if len(entries) < READ_BATCH:
                return out
            start = f"({_seq_of(entries[-1][0])}-0"

    def exists(self) -> bool:
        return bool(self.redis.exists(self.key))

    def expire_in(self, seconds: int) -> None:
        self.redis.expire(self.key, seconds)

    def delete(self) -> None:
        self.redis.delete(self.key)


class AsyncTurnStream:
    """Reading one turn's events through an asyncio client (the chat socket's replay)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, turn_uuid):
        self.redis = client
        self.key = keys.stream(turn_uuid)

    async def read(self, after: int = 0, until: int | None = None) -> list[StreamEvent] | None:
        """Events with after < seq (<= until), in order; None when the turn has no stream in Redis."""
        start, end = _range(after, until)
        out: list[StreamEvent] = []
        while True:
            entries = await self.redis.xrange(self.key, min=start, max=end, count=READ_BATCH)
            out.extend(_decode_entry(entry_id, fields) for entry_id, fields in entries)
            if len(entries) < READ_BATCH:
                break
            start = f"({_seq_of(entries[-1][0])}-0"
        if not out and not await self.redis.exists(self.key):
            return None
        return out


def request_cancel(client: redis.Redis, keys: Keys, turn_uuid) -> None:
    """Raise the turn's cancel flag; the worker sees it between deltas and while tools run."""
    client.set(keys.cancel(turn_uuid), "1", ex=CANCEL_TTL)


def cancel_requested(client: redis.Redis, keys: Keys, turn_uuid) -> bool:
    """Whether the cancel flag is up. While Redis is unreachable nobody can raise it: False, so an
    outage does not end the turn (the loop asks again at its next poll)."""
    try:
        return bool(client.exists(keys.cancel(turn_uuid)))
    except redis.RedisError as error:
        log.warning("cancel check of turn %s skipped: Redis unreachable (%s)", turn_uuid, error)
        return False
