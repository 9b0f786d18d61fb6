"""The Celery tasks of a turn: `run_turn(turn_id)` claims a turn, runs the agent loop with what its
tools need, records the events in Postgres and publishes them to the turn's stream.

The registered names stay `agent.tasks.*`, so tasks queued before the move still run. A duplicate or
redelivered task finds the lease held and looks again when it would expire; a turn whose worker died
(lease expired) is resumed from its last finished step. When a worker starts it re-enqueues turns
left running, so a killed worker's turns do not wait for the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from celery import shared_task
from celery.exceptions import Ignore
from celery.signals import worker_ready
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.conf import settings
from django.db import close_old_connections, connection

from agent.client import ModelClient
from agent.events import TurnFinished, TurnStarted, TurnStatus
from agent.loop import AgentLoop, LoopConfig
from agent.publisher import BackgroundPublisher, EventPublisher
from agent.stream import TurnStream, cancel_requested
from agent.tools import TOOLS, SearchSettings, ToolContext
from corpus.search import DocumentCorpus
from documents.library import library_for

from . import queue, recording
from . import redis as chat_redis
from .attachments import AttachmentSink
from .sandbox_status import consumes_turns

log = logging.getLogger(__name__)


RESUMING = "The worker restarted — resuming"


def published_events(stream: TurnStream) -> list:
    """What the turn's stream holds (nothing while Redis is unreachable: Postgres alone then)."""
    try:
        return [item.event for item in stream.read()]
    except Exception:
        log.warning("turn %s: its stream could not be read; resuming from Postgres alone", stream.turn)
        return []


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


def search_settings() -> SearchSettings:
    return SearchSettings(
        backend=settings.SEARCH_BACKEND,
        searxng_url=settings.SEARXNG_URL,
        brave_api_key=settings.BRAVE_API_KEY,
        tavily_api_key=settings.TAVILY_API_KEY,
    )


def tool_context(turn) -> ToolContext:
    """What this turn's tools may use: the local corpus, the search settings, a per-turn session key,
    and the conversation's attached files (None without files: then no file tools are declared)."""
    return ToolContext(
        corpus=DocumentCorpus(),
        search=search_settings(),
        files=AttachmentSink(turn),
        session=str(turn.uuid),
        files_library=library_for(turn.conversation),
    )


def end_tool_sessions(turn) -> None:
    """What tools keep for the turn (the python interpreter) ends with it: done, failed or stopped."""
    for tool in TOOLS.values():
        if tool.end_session is not None:
            tool.end_session(str(turn.uuid))


def model_client() -> ModelClient:
    return ModelClient(
        settings.LLM_BASE_URL, settings.LLM_MODEL, settings.LLM_API_KEY, temperature=settings.LLM_TEMPERATURE
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
                try:
                    renewed = recording.renew_lease(self.turn_id, self.owner, self.lease)
                except recording.CONNECTION_ERRORS as exc:
                    # Postgres is away: nobody can take the turn meanwhile; renew when it is back.
                    log.warning("turn %s: lease not renewed, database unreachable (%s)", self.turn_id, exc)
                    connection.close()
                    continue
                if not renewed:
                    log.warning("turn %s: lease lost to another worker; stopping here", self.turn_id)
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection


def execute_turn(
    turn_id: int, owner: str | None = None, *, client: ModelClient | None = None, checkpoint_every=1.0
) -> recording.Claim:
    """Run (or resume) one turn to its end in this process. Returns the recording.Claim it got."""
    owner = owner or worker_identity()
    lease = float(settings.AGENT_LEASE_SECONDS)
    claim = recording.claim_turn(turn_id, owner, lease)
    if claim.turn is None:
        return claim
    turn = claim.turn
    queue.announce()  # the turns still queued moved up
    client = client or model_client()
    redis = chat_redis.sync_client()
    keys = chat_redis.keys()
    stream = chat_redis.turn_stream(turn.uuid)
    published = published_events(stream)
    publisher = BackgroundPublisher(
        EventPublisher(
            stream,
            channel_layers.make_backend(DEFAULT_CHANNEL_LAYER),
            keys.group(turn.conversation.uuid),
            ttl=settings.AGENT_EVENTS_TTL,
        )
    )
    heartbeat = Heartbeat(turn.id, owner, lease)
    loop = AgentLoop(
        client,
        loop_config(turn.thinking),
        is_cancelled=lambda: heartbeat.lost.is_set() or cancel_requested(redis, keys, turn.uuid),
        tool_context=tool_context(turn),
    )
    # A turn that ran before (its worker died): the unfinished step is made whole and continued, and
    # the page is told; the notice clears when the model writes again.
    resumed = any(isinstance(e, TurnStarted) for e in published) or turn.step_rows.exists()
    catch_up = recording.settle_unfinished_step(turn, published)
    messages, state = recording.build_transcript(turn)
    if not turn.model:
        recording.set_model(turn, client.model)
    recorder = recording.TurnRecorder(turn, checkpoint_every, settings.AGENT_DB_RETRY_SECONDS)
    if state.partial is not None:
        recorder.continue_step(state.step)
    heartbeat.start()
    finished = False
    notice_up = False
    events = loop.run(messages, state)
    try:
        for event in events:
            if heartbeat.lost.is_set():
                break  # another worker owns the turn now: write and publish nothing more
            if notice_up and not isinstance(event, TurnStatus):
                publisher.publish(TurnStatus(text=""))
                notice_up = False
            if isinstance(event, TurnStarted):
                publisher.publish(event)  # it clears the page's queue line; the resume notice follows
                if resumed:
                    publisher.publish(TurnStatus(text=RESUMING))
                    notice_up = True
                for missing in catch_up:  # already in Postgres; the stream lacked them
                    publisher.publish(missing)
                continue
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
            recording.TurnRecorder(turn, db_retry_seconds=settings.AGENT_DB_RETRY_SECONDS).record(final)
            publisher.publish(final)
            finished = True
    finally:
        events.close()
        try:
            recorder.close()
        except Exception:
            log.exception("turn %s: the last checkpoint could not be written", turn.id)
        end_tool_sessions(turn)
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
        publisher.close(finished)
    return claim


@shared_task(name="agent.tasks.run_turn", bind=True, acks_late=True, max_retries=None)
def run_turn(self, turn_id: int, sweep: bool = False):
    close_old_connections()
    claim = execute_turn(turn_id)
    if claim.missing:
        # Not this installation's turn (another one shares the Redis server under the same namespace,
        # or the row was deleted): say so, and do not report success.
        log.warning(
            "run_turn: turn %s is not in this database (namespace %r); ignoring the task",
            turn_id,
            settings.KIMIWEB_NAMESPACE,
        )
        raise Ignore()
    if claim.retry_in:
        if sweep:
            return "alive"  # a sweep's probe: the holder is alive, and the next sweep looks again
        # Another worker holds a live lease (this is a duplicate or redelivered task). Look again when
        # the lease would expire: if that worker has died by then, this task resumes the turn.
        raise self.retry(countdown=claim.retry_in)
    return "finished" if claim.finished else "ran"


@shared_task(name="agent.tasks.resume_orphaned_turns")
def resume_orphaned_turns():
    """Probe every running turn when its lease would lapse: a turn whose worker died is resumed.

    Runs when a worker starts; Celery beat runs it every AGENT_LEASE_SECONDS (CELERY_BEAT_SCHEDULE) to
    also catch workers that die while others keep running."""
    leases = recording.running_turn_leases()
    for turn_id, seconds_left in leases:
        run_turn.apply_async((turn_id,), {"sweep": True}, countdown=max(0.0, seconds_left + 0.5))
    return len(leases)


@worker_ready.connect
def _resume_on_worker_start(sender=None, **kwargs):
    if consumes_turns(sender):
        resume_orphaned_turns.delay()
