"""A turn in Postgres: claim it (a lease), rebuild its transcript for the model, and record its events as rows.

Per step the recorder writes a constant number of rows (the Step insert and update, the Turn
update, two writes per tool call), plus text checkpoints while streaming: a delta is in its Step
row at most `checkpoint_every` seconds after it was recorded, whether or not more deltas follow.

A step its worker died in is settled on resume (`settle_unfinished_step`): its text is the longer of
its checkpoint and what the turn's stream published, and the resumed loop continues it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from agent import events as ev
from agent.loop import INTERRUPTED, TOOL_CUT_OFF, TOOL_CUT_OFF_RESULT, PartialStep, TurnState, system_prompt

from .models import Attachment, Message, Step, ToolCall, Turn

log = logging.getLogger(__name__)


# What a lost or refused connection raises (Postgres restarting, or our backend terminated).
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def retrying(write, what: str, retry_seconds: float, *, sleep=time.sleep):
    """Run `write()` (one write, or one transaction), retrying with backoff (0.1 s doubling to 2 s)
    while the database is unreachable, for up to `retry_seconds`; then the error is raised. Each
    retry starts on a fresh connection; a write that failed rolled back whole, so none is half done."""
    started, delay, attempts = time.monotonic(), 0.1, 0
    while True:
        try:
            return write()
        except CONNECTION_ERRORS as exc:
            attempts += 1
            if connection.in_atomic_block or time.monotonic() - started + delay > retry_seconds:
                raise
            if attempts == 1 or attempts % 10 == 0:
                log.warning("%s: the database is unreachable (%s); retrying", what, str(exc).strip())
            try:
                connection.close()
            except DatabaseError:
                pass
            sleep(delay)
            delay = min(2.0, delay * 2)


@dataclass
class Claim:
    turn: Turn | None = None  # set when this worker now holds the turn
    finished: bool = False  # the turn is already done, failed or cancelled
    missing: bool = False  # no such turn in this database
    retry_in: float = 0.0  # another live worker holds it: look again after this many seconds


def claim_turn(turn_id: int, owner: str, lease_seconds: float) -> Claim:
    """Take the lease if the turn is queued, or running under an expired lease (its worker died)."""
    now = timezone.now()
    taken = (
        Turn.objects.filter(id=turn_id)
        .filter(
            Q(status=Turn.Status.QUEUED)
            | Q(status=Turn.Status.RUNNING, lease_expires__lt=now)
            | Q(status=Turn.Status.RUNNING, lease_expires__isnull=True)
            | Q(status=Turn.Status.RUNNING, lease_owner=owner)
        )
        .update(
            status=Turn.Status.RUNNING,
            lease_owner=owner,
            lease_expires=now + timedelta(seconds=lease_seconds),
            started=Coalesce(F("started"), now),
        )
    )
    if taken:
        return Claim(turn=Turn.objects.select_related("conversation", "user_message").get(id=turn_id))
    turn = Turn.objects.filter(id=turn_id).only("status", "lease_expires").first()
    if turn is None:
        return Claim(missing=True)
    if turn.is_finished:
        return Claim(finished=True)
    remaining = (turn.lease_expires - now).total_seconds() if turn.lease_expires else 0.0
    return Claim(retry_in=max(1.0, remaining + 0.5))


def renew_lease(turn_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend our lease; False means another worker took the turn over (we stalled too long)."""
    return bool(
        Turn.objects.filter(id=turn_id, lease_owner=owner, status=Turn.Status.RUNNING).update(
            lease_expires=timezone.now() + timedelta(seconds=lease_seconds)
        )
    )


def set_model(turn: Turn, model: str) -> None:
    Turn.objects.filter(id=turn.id).update(model=model)


def running_turn_leases() -> list[tuple[int, float]]:
    """(turn id, seconds until its lease lapses; 0 if it already has) for every running turn."""
    now = timezone.now()
    rows = Turn.objects.filter(status=Turn.Status.RUNNING).values_list("id", "lease_expires")
    return [(i, max(0.0, (exp - now).total_seconds()) if exp else 0.0) for i, exp in rows]


def _published_step(published: list[ev.Event], index: int) -> tuple[bool, str, str]:
    """Whether the stream holds step `index`'s start, and the reasoning and content it published since."""
    start = None
    for i, event in enumerate(published):
        if isinstance(event, ev.StepStarted) and event.index == index:
            start = i
    if start is None:
        return False, "", ""
    reasoning, content = [], []
    for event in published[start + 1 :]:
        match event:
            case ev.ReasoningDelta(text=text):
                reasoning.append(text)
            case ev.ContentDelta(text=text):
                content.append(text)
    return True, "".join(reasoning), "".join(content)


def _longer(a: str, b: str) -> str:
    """The fuller of two records of one growing text (each a prefix of the other when both are whole)."""
    return a if len(a) >= len(b) else b


def settle_unfinished_step(turn: Turn, published: list[ev.Event]) -> list[ev.Event]:
    """Make the step a dead worker left unfinished whole again; return the events to publish so the
    turn's stream shows it as Postgres now has it.

    `published` is what the turn's stream holds. The step's text becomes the longer of its checkpoint
    and what was published (a checkpoint can trail the stream by up to a second, the stream can trail
    the checkpoint by the publisher's queue); what the stream lacks is published as deltas. A step
    whose tools had started has its whole model output: it is finished as a tool-call step, and a
    call that had not finished ends as an error the model and the page see."""
    step = Step.objects.filter(turn=turn, finished__isnull=True).order_by("-index").first()
    if step is None:
        return []
    started, reasoning, content = _published_step(published, step.index)
    out: list[ev.Event] = [] if started else [ev.StepStarted(index=step.index)]
    if not started:
        reasoning = content = ""
    full_reasoning, full_content = _longer(step.reasoning, reasoning), _longer(step.content, content)
    if full_reasoning[len(reasoning) :]:
        out.append(ev.ReasoningDelta(text=full_reasoning[len(reasoning) :]))
    if full_content[len(content) :]:
        out.append(ev.ContentDelta(text=full_content[len(content) :]))
    calls = list(step.tool_calls.order_by("index"))
    with transaction.atomic():
        Step.objects.filter(id=step.id).update(reasoning=full_reasoning, content=full_content)
        if calls:
            now = timezone.now()
            for call in calls:
                if call.status != ToolCall.Status.RUNNING:
                    continue
                result = TOOL_CUT_OFF_RESULT
                ToolCall.objects.filter(id=call.id).update(
                    status=ToolCall.Status.ERROR, result=result, error=TOOL_CUT_OFF, finished=now
                )
                out.append(
                    ev.ToolCallFinished(
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                        result=result,
                        status="error",
                        error=TOOL_CUT_OFF,
                    )
                )
            Step.objects.filter(id=step.id).update(finish_reason="tool_calls", finished=now)
            Turn.objects.filter(id=turn.id).update(steps=step.index + 1)
            out.append(ev.StepFinished(index=step.index, finish_reason="tool_calls"))
    log.info(
        "turn %s: step %d settled after a worker stopped (%d+%d characters; %d calls)",
        turn.id,
        step.index,
        len(full_reasoning),
        len(full_content),
        len(calls),
    )
    return out


def build_transcript(turn: Turn) -> tuple[list[dict], TurnState]:
    """The model context from Postgres: the visible conversation up to the turn's user message, then
    the turn's finished steps (assistant tool-call messages with their reasoning, and tool results).
    A step left unfinished by a dead worker (settled first, see `settle_unfinished_step`) is not in
    the messages: its text is `state.partial`, and the loop continues it. A step kept as an
    interrupted attempt is shown to the user but not to the model."""
    history = (
        Message.objects.filter(conversation_id=turn.conversation_id, superseded_by__isnull=True)
        .filter(Q(created__lt=turn.user_message.created) | Q(id=turn.user_message_id))
        .exclude(turn=turn)
        .order_by("created", "id")
        .values_list("role", "content")
    )
    messages = [{"role": "system", "content": system_prompt()}]
    messages += [{"role": role, "content": content} for role, content in history]
    state = TurnState(tokens_in=turn.tokens_in, tokens_out=turn.tokens_out)
    if turn.started:
        state.elapsed = (timezone.now() - turn.started).total_seconds()
    for step in Step.objects.filter(turn=turn).order_by("index").prefetch_related("tool_calls"):
        state.reasoning.append(step.reasoning)
        state.step = step.index + 1
        if step.finished is None:
            state.reasoning.pop()
            state.step = step.index
            state.partial = PartialStep(reasoning=step.reasoning, content=step.content)
            break
        if step.finish_reason == INTERRUPTED:
            continue
        calls = list(step.tool_calls.all())
        assistant = {"role": "assistant", "content": step.content, "reasoning_content": step.reasoning}
        if calls:
            assistant["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]
        messages.append(assistant)
        messages += [{"role": "tool", "tool_call_id": c.call_id, "content": c.result} for c in calls]
    return messages, state


class TurnRecorder:
    """Turns the loop's events into Step, ToolCall, Turn and Message rows.

    Text deltas are buffered and checkpointed into their Step row by a timer thread (its own database
    connection) at most `checkpoint_every` seconds after they were recorded, also when no delta
    follows; `close()` stops it."""

    def __init__(self, turn: Turn, checkpoint_every: float = 1.0, db_retry_seconds: float = 60.0):
        self.turn = turn
        self.checkpoint_every = checkpoint_every
        self.db_retry_seconds = db_retry_seconds
        self.step: Step | None = None
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: dict[str, ToolCall] = {}
        self._lock = threading.Lock()  # the step and its buffers, between the loop and the timer
        self._due: float | None = None  # when the oldest unsaved delta must be in Postgres
        self._wake = threading.Event()
        self._closed = False
        self._timer: threading.Thread | None = None

    def continue_step(self, index: int) -> None:
        """Record into the existing row of step `index` (a resumed turn continues it), from its text."""
        with self._lock:
            self.step = Step.objects.get(turn=self.turn, index=index)
            self.reasoning, self.content, self.calls = [self.step.reasoning], [self.step.content], {}

    def record(self, event: ev.Event) -> None:
        """Write what `event` means; while the database is unreachable the write is retried (see
        `retrying`), so the loop waits rather than losing the step."""
        retrying(lambda: self._record(event), f"turn {self.turn.id}: {event.type}", self.db_retry_seconds)

    def _record(self, event: ev.Event) -> None:
        match event:
            case ev.StepStarted():
                self._step_started(event)
            case ev.ReasoningDelta(text=text):
                self._buffer(self.reasoning, text)
            case ev.ContentDelta(text=text):
                self._buffer(self.content, text)
            case ev.ToolCallRunning():
                self._tool_running(event)
            case ev.ToolCallFinished():
                self._tool_finished(event)
            case ev.StepFinished():
                self._step_finished(event)
            case ev.TurnFinished():
                self._turn_finished(event)

    def close(self) -> None:
        """Write what is still buffered and stop the checkpoint timer."""
        self._closed = True
        self._wake.set()
        if self._timer is not None:
            self._timer.join(timeout=10)
        self._checkpoint()

    def _step_started(self, event: ev.StepStarted) -> None:
        step, _ = Step.objects.get_or_create(turn=self.turn, index=event.index)
        with self._lock:
            self.step = step
            self.reasoning, self.content, self.calls = [], [], {}
            self._due = None

    def _buffer(self, parts: list[str], text: str) -> None:
        with self._lock:
            parts.append(text)
            if self._due is None:
                self._due = time.monotonic() + self.checkpoint_every
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._run_timer, daemon=True, name=f"checkpoint-{self.turn.id}"
            )
            self._timer.start()
        self._wake.set()

    def _run_timer(self) -> None:
        failures = 0
        try:
            while not self._closed:
                due = self._due
                if due is None:
                    self._wake.wait()
                    self._wake.clear()
                    continue
                # Write a little early: the write itself takes time.
                wait = due - time.monotonic() - min(0.1, self.checkpoint_every / 4)
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
                    continue
                try:
                    self._checkpoint()
                    failures = 0
                except CONNECTION_ERRORS as exc:  # the database is away: try again shortly
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        log.warning(
                            "turn %s: checkpoint failed (%s); retrying", self.turn.id, str(exc).strip()
                        )
                    connection.close()
                    self._wake.wait(0.5)
        finally:
            connection.close()  # this thread's own connection

    def _checkpoint(self) -> None:
        with self._lock:
            if self._due is None or self.step is None:
                return
            Step.objects.filter(id=self.step.id, finished__isnull=True).update(
                reasoning="".join(self.reasoning), content="".join(self.content)
            )
            self._due = None

    def _tool_running(self, event: ev.ToolCallRunning) -> None:
        self.calls[event.call_id], _ = ToolCall.objects.get_or_create(
            step=self.step,
            call_id=event.call_id,
            defaults=dict(index=len(self.calls), name=event.name, arguments=event.arguments),
        )

    def _tool_finished(self, event: ev.ToolCallFinished) -> None:
        fields = dict(result=event.result, status=event.status, error=event.error, finished=timezone.now())
        row = self.calls.get(event.call_id)
        if row is None:  # cancelled while its arguments were still streaming: it never ran
            self.calls[event.call_id] = ToolCall.objects.create(
                step=self.step,
                index=len(self.calls),
                call_id=event.call_id,
                name=event.name,
                arguments=event.arguments,
                **fields,
            )
        else:
            ToolCall.objects.filter(id=row.id).update(**fields)
        if event.files:  # the files the call made (stored by chat.attachments) belong to it
            Attachment.objects.filter(uuid__in=[f["id"] for f in event.files], turn=self.turn).update(
                tool_call=self.calls[event.call_id]
            )

    def _step_finished(self, event: ev.StepFinished) -> None:
        now = timezone.now()
        with self._lock:
            self._due = None
        with transaction.atomic():  # the step and the turn's count together, or neither
            Step.objects.filter(id=self.step.id).update(
                reasoning="".join(self.reasoning),
                content="".join(self.content),
                finish_reason=event.finish_reason,
                usage=event.usage,
                finished=now,
            )
            Turn.objects.filter(id=self.turn.id).update(
                steps=event.index + 1,
                tokens_in=F("tokens_in") + event.usage.get("prompt_tokens", 0),
                tokens_out=F("tokens_out") + event.usage.get("completion_tokens", 0),
            )

    def _turn_finished(self, event: ev.TurnFinished) -> None:
        with transaction.atomic():
            if event.status == "done" or event.content or event.reasoning:
                Message.objects.update_or_create(
                    turn=self.turn,
                    defaults=dict(
                        conversation_id=self.turn.conversation_id,
                        role=Message.Role.ASSISTANT,
                        content=event.content,
                        reasoning=event.reasoning,
                    ),
                )
            Turn.objects.filter(id=self.turn.id).update(
                status=event.status, error=event.error, finished=timezone.now(), lease_expires=None
            )
