"""Publish a turn's events: stamp each with the next per-turn `seq`, append it to the capped Redis
stream (`turn:<uuid>:events`, entry id `<seq>-0`), and `group_send` it to the conversation's group.

A resumed turn continues `seq` from the stream's last entry, so the sequence stays contiguous
across worker deaths.
"""

from __future__ import annotations

import asyncio
import logging

import redis

from .events import STREAM_FIELD, Event, group_name, stream_key

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
        self.seq += 1
        data = event.to_dict(seq=self.seq, turn=self.turn)
        self.redis.xadd(
            self.key,
            {STREAM_FIELD: event.to_json(seq=self.seq, turn=self.turn)},
            id=f"{self.seq}-0",
            maxlen=self.maxlen,
            approximate=True,
        )
        if self._loop is not None:
            try:
                self._loop.run_until_complete(
                    self.layer.group_send(self.group, {"type": "turn.event", "event": data})
                )
            except Exception:  # live delivery is best effort: the stream (and Postgres) keep the truth
                log.exception("group_send failed for turn %s seq %d", self.turn, self.seq)
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
