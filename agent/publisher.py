"""Publish a turn's events: stamp each with the next per-turn `seq`, append it to the capped Redis
stream (`turn:<uuid>:events`, entry id `<seq>-0`), and `group_send` it to the conversation's group.

A resumed turn continues `seq` from the stream's last entry, so the sequence stays contiguous
across worker deaths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time

import redis

from .events import (
    STREAM_FIELD,
    ContentDelta,
    Event,
    ReasoningDelta,
    ToolCallArguments,
    group_name,
    stream_key,
)

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(
        self,
        client: redis.Redis,
        channel_layer,
        turn_uuid,
        conversation_uuid,
        *,
        maxlen: int = 100_000,
        ttl: int = 24 * 3600,
        live_ttl: int = 7 * 24 * 3600,
    ):
        self.redis = client
        self.layer = channel_layer
        self.turn = str(turn_uuid)
        self.key = stream_key(turn_uuid)
        self.group = group_name(conversation_uuid)
        self.maxlen = maxlen
        self.ttl = ttl
        last = self.redis.xrevrange(self.key, count=1)
        self.seq = int(last[0][0].split(b"-")[0]) if last else 0
        # Even if the worker dies, the stream must not outlive the turn by forever.
        self.redis.expire(self.key, live_ttl)
        # channels_redis keeps its connection pools per event loop: one loop for the whole turn reuses
        # them (async_to_sync per event would open a fresh loop, and fresh connections, every time).
        # The layer should be this turn's own instance (`channel_layers.make_backend`), since `close`
        # closes all its pools.
        self._loop = asyncio.new_event_loop() if channel_layer is not None else None

    def publish(self, event: Event) -> int:
        return self.publish_batch([event])

    def publish_batch(self, events: list[Event]) -> int:
        """Append the events in one Redis round trip, then group_send them as one message; return the last seq.

        One group message per batch, not per event: each Channels message costs Daphne a few Redis
        commands and a wake-up per socket, which capped a process at a few hundred events/s.
        """
        stamped = []
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            self.seq += 1
            stamped.append(event.to_dict(seq=self.seq, turn=self.turn))
            pipe.xadd(
                self.key,
                {STREAM_FIELD: json.dumps(stamped[-1], ensure_ascii=False, separators=(",", ":"))},
                id=f"{self.seq}-0",
                maxlen=self.maxlen,
                approximate=True,
            )
        pipe.execute()
        if self._loop is not None and stamped:
            try:
                self._loop.run_until_complete(
                    self.layer.group_send(self.group, {"type": "turn.events", "events": stamped})
                )
            except Exception:  # live delivery is best effort: the stream (and Postgres) keep the truth
                log.exception("group_send failed for turn %s up to seq %d", self.turn, self.seq)
        return self.seq

    def close(self, finished: bool) -> None:
        if finished:
            self.redis.expire(self.key, self.ttl)
        if self._loop is not None:
            try:
                self._loop.run_until_complete(self.layer.close_pools())
            except Exception:
                log.debug("closing channel layer pools failed", exc_info=True)
            self._loop.close()
            self._loop = None


def coalesce(events: list[Event]) -> list[Event]:
    """Merge runs of adjacent text deltas of the same kind (same tool call) into one event each.

    Only what queued up while Redis was busy is merged, so a fast path stays one event per delta and
    a slow one degrades to fewer, larger events instead of falling behind. The text is unchanged.
    """
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, ReasoningDelta | ContentDelta) and type(last) is type(event):
            out[-1] = type(event)(text=last.text + event.text)
        elif (
            isinstance(event, ToolCallArguments)
            and isinstance(last, ToolCallArguments)
            and last.call_id == event.call_id
        ):
            out[-1] = ToolCallArguments(call_id=event.call_id, delta=last.delta + event.delta)
        else:
            out.append(event)
    return out


class BackgroundPublisher:
    """Publishes from its own thread, so the loop never waits on Redis between deltas.

    Events keep their order (one FIFO, one thread); whatever queued up while Redis was busy goes out
    in one pipelined batch, adjacent text deltas merged. After the first event of a batch it lingers
    `linger` seconds for more, so a fast token stream goes out as a few batches per frame rather than
    one message per token (the browser repaints at ~30 frames/s anyway). A full queue blocks the
    caller: back-pressure rather than unbounded memory.
    """

    _CLOSE = object()

    def __init__(
        self, publisher: EventPublisher, max_queue: int = 10_000, max_batch: int = 256, linger: float = 0.015
    ):
        self.publisher = publisher
        self.max_batch = max_batch
        self.linger = linger
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name=f"publish-{publisher.turn}", daemon=True)
        self._thread.start()

    def publish(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        closing = False
        while not closing:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.max_batch and batch[-1] is not self._CLOSE:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if batch[-1] is self._CLOSE:
                closing = True
                batch.pop()
            if batch:
                try:
                    self.publisher.publish_batch(coalesce(batch))
                except Exception:  # Redis unreachable: Postgres still has the turn; keep the worker going
                    log.exception("publishing %d events of turn %s failed", len(batch), self.publisher.turn)

    def close(self, finished: bool) -> None:
        """Publish everything queued, then close the underlying publisher."""
        self._queue.put(self._CLOSE)
        self._thread.join()
        self.publisher.close(finished)
