"""Replay a turn's events for a (re)connecting browser: from the Redis stream, or rebuilt from Postgres.

The worker appends every event to `turn:<uuid>:events` under the id `<seq>-0`, so "everything after
the last sequence number the client saw" is `XRANGE key (<seq>-0 +`. When the stream is gone (it
expired after the turn ended, or Redis lost it) the turn is rebuilt from its checkpointed rows.
"""

from __future__ import annotations

import asyncio
import json
import logging

import redis
import redis.asyncio as aioredis
from django.conf import settings

from agent.events import STREAM_FIELD, stream_key

log = logging.getLogger(__name__)

BATCH = 1000
_async_clients: dict[tuple[int, str], aioredis.Redis] = {}
_sync_clients: dict[str, redis.Redis] = {}


def async_redis() -> aioredis.Redis:
    """One asyncio Redis client per event loop (Daphne has one; tests have one per test)."""
    key = (id(asyncio.get_running_loop()), settings.REDIS_URL)
    client = _async_clients.get(key)
    if client is None:
        if len(_async_clients) > 8:  # clients of loops that finished (tests)
            _async_clients.clear()
        client = _async_clients[key] = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    return client


def sync_redis() -> redis.Redis:
    client = _sync_clients.get(settings.REDIS_URL)
    if client is None:
        client = _sync_clients[settings.REDIS_URL] = redis.Redis.from_url(
            settings.REDIS_URL, decode_responses=True
        )
    return client


def decode_entry(entry_id: str, fields: dict) -> dict:
    event = json.loads(fields[STREAM_FIELD])
    event.setdefault("seq", int(entry_id.split("-", 1)[0]))
    return event


async def replay_events(turn_uuid, after: int = 0, until: int | None = None) -> list[dict] | None:
    """Events with after < seq (<= until), in order; None when the turn has no stream in Redis."""
    client = async_redis()
    key = stream_key(turn_uuid)
    events: list[dict] = []
    start = f"({int(after)}-0"
    end = f"{int(until)}-0" if until is not None else "+"
    while True:
        entries = await client.xrange(key, min=start, max=end, count=BATCH)
        events.extend(decode_entry(entry_id, fields) for entry_id, fields in entries)
        if len(entries) < BATCH:
            break
        start = f"({entries[-1][0]}"
    if not events and not await client.exists(key):
        return None
    return events
