"""Stop a running turn from anywhere (the chat socket, the admin console): raise its cancel flag in Redis.

The worker polls the flag between deltas and while tools run. No Django models here, only settings.
"""

from __future__ import annotations

import os

import redis
from django.conf import settings

from .events import cancel_key

CANCEL_TTL = 24 * 3600  # long enough for any turn; the flag then disappears on its own

_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis() -> redis.Redis:
    """One client per process and URL (a forked Celery child must not share its parent's sockets)."""
    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(settings.REDIS_URL)
    return client


def request_cancel(turn_uuid) -> None:
    get_redis().set(cancel_key(turn_uuid), "1", ex=CANCEL_TTL)


def is_cancel_requested(turn_uuid) -> bool:
    return bool(get_redis().exists(cancel_key(turn_uuid)))
