"""Publish a turn's events as the worker produces them: append each batch to the turn's stream
(`agent/stream.py`, which stamps the seqs) and send it live to the conversation's Channels group.

A resumed turn continues `seq` from the stream's last entry, so the sequence stays contiguous
across worker deaths.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from .events import ContentDelta, Event, ReasoningDelta, ToolCallArguments
from .stream import EVENTS_TTL, LIVE_TTL, TurnStream, live_message

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, stream: TurnStream, channel_layer, group: str, *, ttl: int = EVENTS_TTL):
        self.stream = stream
        self.turn = stream.turn
        self.layer = channel_layer
        self.group = group
        self.ttl = ttl
        self.seq = stream.last_seq()
        # Even if the worker dies, the stream must not outlive the turn by forever.
        stream.expire_in(LIVE_TTL)
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
        if not events:
            return self.seq
        wired = self.stream.append(events, after=self.seq)
        self.seq = wired[-1]["seq"]
        if self._loop is not None:
            try:
                self._loop.run_until_complete(self.layer.group_send(self.group, live_message(wired)))
            except Exception:  # live delivery is best effort: the stream (and Postgres) keep the truth
                log.exception("group_send failed for turn %s up to seq %d", self.turn, self.seq)
        return self.seq

    def close(self, finished: bool) -> None:
        if finished:
            self.stream.expire_in(self.ttl)
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
