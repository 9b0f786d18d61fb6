"""`/healthz`: 200 when Postgres and Redis answer, 503 naming the ones that do not (for probes and load balancers).

The python sandbox's state (from the worker's start-up self-test) is reported too, but a sandbox that is
unavailable only degrades one tool: it never makes the answer 503.
"""

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .sandbox_status import last_status

logger = logging.getLogger(__name__)


def check_postgres() -> str | None:
    """None when Postgres answers a query, else the reason it did not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any failure means "not healthy"; the reason goes into the answer
        # A broken connection would otherwise be reused by the next request in this thread.
        connection.close_if_unusable_or_obsolete()
        return f"{type(error).__name__}: {error}".strip()
    return None


def sandbox_state() -> dict:
    """The last worker's self-test: {"state": "ok"|"unavailable"|"unknown", "reason", "bwrap", "memory_limit"}."""
    try:
        status = last_status()
    except Exception as error:
        status = {"reason": f"{type(error).__name__}: {error}"}
    if status is None:
        status = {"reason": "no worker has reported its sandbox self-test"}
    state = {"state": "unknown", "reason": "", "bwrap": "", "memory_limit": "", **status}
    if "available" in state:
        state["state"] = "ok" if state.pop("available") else "unavailable"
    if state["state"] == "unavailable":
        state["degraded"] = "the python tool refuses to run"
    return state


def check_redis() -> str | None:
    """None when Redis answers PING, else the reason it did not."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as error:
        return f"{type(error).__name__}: {error}".strip()
    finally:
        client.close()
    return None


@never_cache
@require_GET
def healthz(request):
    checks = {"postgres": check_postgres(), "redis": check_redis()}
    failed = [name for name, error in checks.items() if error]
    body = {
        "status": "fail" if failed else "ok",
        "checks": {name: error or "ok" for name, error in checks.items()},
        "failed": failed,
        "sandbox": sandbox_state(),
    }
    if failed:
        logger.warning("health check failed: %s", body["checks"])
    return JsonResponse(body, status=503 if failed else 200)
