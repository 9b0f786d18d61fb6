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

    def appended_since(self) -> int:
        """How many events after `self.seq` the stream already holds (a batch whose append failed
        half-way, or whose reply was lost); they are taken as published."""
        done = max(0, self.stream.last_seq() - self.seq)
        self.seq += done
        return done

    def close(self, finished: bool) -> None:
        if finished:
            try:
                self.stream.expire_in(self.ttl)
            except Exception:
                log.exception("could not set the expiry of turn %s's stream", self.turn)
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
    in one pipelined batch, adjacent text deltas merged. While Redis is unreachable the events wait
    and the publish is retried with backoff (0.2 s doubling to 5 s); when Redis answers again they go
    out with the seqs they would have had (what a failed batch did append is not appended twice). After the first event of a batch it lingers
    `linger` seconds for more, so a fast token stream goes out as a few batches per frame rather than
    one message per token (the browser repaints at ~30 frames/s anyway). A full queue blocks the
    caller: back-pressure rather than unbounded memory.
    """

    _CLOSE = object()

    def __init__(
        self,
        publisher: EventPublisher,
        max_queue: int = 10_000,
        max_batch: int = 256,
        linger: float = 0.015,
        close_timeout: float = 30.0,
    ):
        self.publisher = publisher
        self.close_timeout = close_timeout
        self._give_up_at = float("inf")
        self.max_batch = max_batch
        self.linger = linger
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name=f"publish-{publisher.turn}", daemon=True)
        self._thread.start()

    def publish(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        pending: list[Event] = []  # coalesced, in order; the head may be a batch that failed to go out
        failures = 0
        closing = False
        while not (closing and not pending):
            if not pending or failures:
                # Wait for events; after a failure, wait out the backoff while collecting them.
                wait = min(5.0, 0.2 * 2 ** (failures - 1)) if failures else None
                fresh = self._take(wait)
                closing = closing or self._CLOSE in fresh
                pending += coalesce([e for e in fresh if e is not self._CLOSE])
            if not pending:
                continue
            try:
                if failures:
                    del pending[: self.publisher.appended_since()]
                    if not pending:
                        failures = 0
                        continue
                batch = pending[: self.max_batch]
                self.publisher.publish_batch(batch)
                del pending[: len(batch)]
                if failures:
                    log.info(
                        "publishing turn %s again after %d failed attempts", self.publisher.turn, failures
                    )
                failures = 0
            except Exception:
                # Redis unreachable: keep the events and retry with backoff; Postgres keeps the turn.
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.exception(
                        "publishing %d events of turn %s failed (attempt %d); retrying",
                        len(pending),
                        self.publisher.turn,
                        failures,
                    )
                if closing and time.monotonic() > self._give_up_at:
                    log.error(
                        "turn %s ended with %d events never published", self.publisher.turn, len(pending)
                    )
                    return

    def _take(self, timeout: float | None) -> list:
        """The next queued item (waiting up to `timeout`, None: forever), then what else came within
        `linger` of it, up to `max_batch`."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.linger
        while len(items) < self.max_batch and items[-1] is not self._CLOSE:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def close(self, finished: bool) -> None:
        """Publish everything queued (waiting up to `close_timeout` for Redis), then close the publisher."""
        self._give_up_at = time.monotonic() + self.close_timeout
        self._queue.put(self._CLOSE)
        self._thread.join()
        self.publisher.close(finished)
