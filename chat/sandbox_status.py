"""The python sandbox's start-up self-test in the worker, and its state for /healthz and the dashboard.

The worker runs the self-test when it is ready (Celery `worker_ready`) and logs the outcome, so an
operator sees at start-up why the python tool would refuse; the result is cached in Redis for the web
processes, which never start a sandbox themselves.
"""

from __future__ import annotations

import json
import logging

from celery.signals import worker_ready

from agent.tools.sandbox import sandbox_status

from . import redis as chat_redis

log = logging.getLogger(__name__)


def _key() -> str:
    return chat_redis.key("sandbox", "status")


def publish_status() -> dict:
    """Run (or reuse) this process's self-test and store its outcome where /healthz reads it."""
    state = sandbox_status().as_dict()
    try:
        chat_redis.sync_client().set(_key(), json.dumps(state), ex=24 * 3600)
    except Exception:  # Redis down at worker start: /healthz reports the state unknown
        log.warning("python sandbox: could not store the self-test's result in Redis", exc_info=True)
    return state


def last_status() -> dict | None:
    """What the last worker to start found, or None when no worker has reported."""
    raw = chat_redis.sync_client().get(_key())
    return json.loads(raw) if raw else None


def consumes_turns(consumer) -> bool:
    """Whether a ready worker consumes the agent queue (the extractor worker, `-Q documents`, does not:
    it never runs the python tool, so its sandbox is not the one /healthz reports)."""
    from django.conf import settings

    try:
        queues = set(consumer.app.amqp.queues.consume_from)
    except Exception:  # not a worker as Celery starts one: assume it runs turns
        return True
    return settings.CELERY_TASK_DEFAULT_QUEUE in queues


@worker_ready.connect
def _self_test_at_worker_start(sender=None, **kwargs) -> None:
    if consumes_turns(sender):
        publish_status()
