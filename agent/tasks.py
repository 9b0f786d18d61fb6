"""The only Celery glue: `run_turn(turn_id)` claims a turn, runs the loop, records and publishes.

A duplicate or redelivered task finds the lease held and looks again when it would expire; a turn
whose worker died (lease expired) is resumed from its last finished step. When a worker starts it
re-enqueues turns left running, so a killed worker's turns do not wait for the broker's visibility
timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections, connection

from . import store
from .client import ModelClient
from .control import get_redis
from .events import TurnFinished, cancel_key
from .loop import AgentLoop, LoopConfig
from .publisher import BackgroundPublisher, EventPublisher

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    return float(getattr(settings, "AGENT_LEASE_SECONDS", 60))


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def loop_config(thinking: bool) -> LoopConfig:
    return LoopConfig(
        thinking=thinking,
        max_steps=settings.AGENT_MAX_STEPS,
        max_step_tokens=settings.AGENT_MAX_STEP_TOKENS,
        max_turn_tokens=settings.AGENT_MAX_TURN_TOKENS,
        max_turn_seconds=settings.AGENT_MAX_TURN_SECONDS,
        context_tokens=settings.AGENT_CONTEXT_TOKENS,
        tool_result_chars=settings.AGENT_TOOL_RESULT_CHARS,
    )


class Heartbeat(threading.Thread):
    """Renews the lease while the turn runs (tools can be quiet for a minute); notices a lost lease."""

    def __init__(self, turn_id: int, owner: str, lease: float):
        super().__init__(daemon=True, name=f"lease-{turn_id}")
        self.turn_id, self.owner, self.lease = turn_id, owner, lease
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.lease / 3):
                if not store.renew_lease(self.turn_id, self.owner, self.lease):
                    log.warning("turn %s: lease lost to another worker; stopping here", self.turn_id)
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection


def execute_turn(
    turn_id: int, owner: str | None = None, *, client: ModelClient | None = None, checkpoint_every=1.0
):
    """Run (or resume) one turn to its end in this process. Returns the store.Claim it got."""
    owner = owner or worker_identity()
    lease = lease_seconds()
    claim = store.claim_turn(turn_id, owner, lease)
    if claim.turn is None:
        return claim
    turn = claim.turn
    redis = get_redis()
    if client is None:
        client = ModelClient(
            settings.LLM_BASE_URL,
            settings.LLM_MODEL,
            settings.LLM_API_KEY,
            temperature=settings.LLM_TEMPERATURE,
        )
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    publisher = BackgroundPublisher(
        EventPublisher(
            redis,
            channel_layers.make_backend(DEFAULT_CHANNEL_LAYER),
            turn.uuid,
            turn.conversation.uuid,
            maxlen=getattr(settings, "AGENT_EVENTS_MAXLEN", 100_000),
            ttl=getattr(settings, "AGENT_EVENTS_TTL", 24 * 3600),
        )
    )
    heartbeat = Heartbeat(turn.id, owner, lease)
    flag = cancel_key(turn.uuid)
    loop = AgentLoop(
        client,
        loop_config(turn.thinking),
        is_cancelled=lambda: heartbeat.lost.is_set() or bool(redis.exists(flag)),
    )
    messages, state = store.build_transcript(turn)
    if not turn.model:
        store.set_model(turn, client.model)
    recorder = store.TurnRecorder(turn, checkpoint_every)
    heartbeat.start()
    finished = False
    events = loop.run(messages, state)
    try:
        for event in events:
            if heartbeat.lost.is_set():
                break  # another worker owns the turn now: write and publish nothing more
            if isinstance(event, TurnFinished):
                recorder.record(event)  # the row first: a client that sees the event can rely on it
                publisher.publish(event)
                finished = True
            else:
                publisher.publish(event)
                recorder.record(event)
    except Exception as exc:
        log.exception("turn %s crashed", turn.id)
        if not heartbeat.lost.is_set():
            final = TurnFinished(
                status="failed", error=f"The agent crashed: {exc.__class__.__name__}. It has been logged."
            )
            store.TurnRecorder(turn).record(final)
            publisher.publish(final)
            finished = True
    finally:
        events.close()
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
        publisher.close(finished)
    return claim


@shared_task(name="agent.tasks.run_turn", bind=True, acks_late=True, queue="agent", max_retries=None)
def run_turn(self, turn_id: int, sweep: bool = False):
    close_old_connections()
    claim = execute_turn(turn_id)
    if claim.retry_in:
        if sweep:
            return "alive"  # a sweep's probe: the holder is alive, and the next sweep looks again
        # Another worker holds a live lease (this is a duplicate or redelivered task). Look again when
        # the lease would expire: if that worker has died by then, this task resumes the turn.
        raise self.retry(countdown=claim.retry_in)
    return "finished" if claim.finished else "ran"


@shared_task(name="agent.tasks.resume_orphaned_turns", queue="agent")
def resume_orphaned_turns():
    """Probe every running turn when its lease would lapse: a turn whose worker died is resumed.

    Runs when a worker starts; schedule it with Celery beat (every AGENT_LEASE_SECONDS or so) to
    also catch workers that die while others keep running."""
    leases = store.running_turn_leases()
    for turn_id, seconds_left in leases:
        run_turn.apply_async((turn_id,), {"sweep": True}, countdown=max(0.0, seconds_left + 0.5))
    return len(leases)


@worker_ready.connect
def _resume_on_worker_start(sender=None, **kwargs):
    resume_orphaned_turns.delay()
