"""The Django side's Redis: the one place that makes clients from `REDIS_URL`, and this installation's
namespaced keys (`KIMIWEB_NAMESPACE`) for turn streams, cancel flags, groups and rate limits.
"""

from __future__ import annotations

import asyncio
import os

import redis
import redis.asyncio as aioredis
from django.conf import settings

from agent.stream import AsyncTurnStream, Keys, TurnStream

_sync_clients: dict[tuple[int, str], redis.Redis] = {}
_async_clients: dict[tuple[int, str], aioredis.Redis] = {}


def keys() -> Keys:
    return Keys(settings.KIMIWEB_NAMESPACE)


def key(*parts) -> str:
    """A namespaced key for anything else kept in Redis (rate-limit counters): `<namespace>:a:b:c`."""
    return ":".join([settings.KIMIWEB_NAMESPACE, *map(str, parts)])


def sync_client() -> redis.Redis:
    """One client per process and URL (a forked Celery child must not share its parent's sockets)."""
    ident = (os.getpid(), settings.REDIS_URL)
    client = _sync_clients.get(ident)
    if client is None:
        client = _sync_clients[ident] = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    return client


def async_client() -> aioredis.Redis:
    """One asyncio client per event loop (Daphne has one; tests have one per test)."""
    ident = (id(asyncio.get_running_loop()), settings.REDIS_URL)
    client = _async_clients.get(ident)
    if client is None:
        if len(_async_clients) > 8:  # clients of loops that finished (tests)
            _async_clients.clear()
        client = _async_clients[ident] = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    return client


def turn_stream(turn_uuid) -> TurnStream:
    return TurnStream(sync_client(), keys(), turn_uuid, maxlen=settings.AGENT_EVENTS_MAXLEN)


def async_turn_stream(turn_uuid) -> AsyncTurnStream:
    return AsyncTurnStream(async_client(), keys(), turn_uuid)
