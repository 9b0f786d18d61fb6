"""A turn in Postgres: claim it (a lease), rebuild its transcript for the model, and record its events as rows.

Per step the recorder writes a constant number of rows (the Step insert and update, the Turn
update, two writes per tool call), plus at most one text checkpoint per second while streaming.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from agent import events as ev
from agent.loop import TurnState, system_prompt

from .models import Attachment, Message, Step, ToolCall, Turn


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


def build_transcript(turn: Turn) -> tuple[list[dict], TurnState]:
    """The model context from Postgres: the visible conversation up to the turn's user message, then
    the turn's finished steps (assistant tool-call messages with their reasoning, and tool results).
    A step left unfinished by a dead worker is discarded and will run again."""
    Step.objects.filter(turn=turn, finished__isnull=True).delete()
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
        calls = list(step.tool_calls.all())
        state.reasoning.append(step.reasoning)
        state.step = step.index + 1
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
    """Turns the loop's events into Step, ToolCall, Turn and Message rows."""

    def __init__(self, turn: Turn, checkpoint_every: float = 1.0):
        self.turn = turn
        self.checkpoint_every = checkpoint_every
        self.step: Step | None = None
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: dict[str, ToolCall] = {}
        self.last_checkpoint = time.monotonic()

    def record(self, event: ev.Event) -> None:
        match event:
            case ev.StepStarted():
                self._step_started(event)
            case ev.ReasoningDelta(text=text):
                self.reasoning.append(text)
                self._maybe_checkpoint()
            case ev.ContentDelta(text=text):
                self.content.append(text)
                self._maybe_checkpoint()
            case ev.ToolCallRunning():
                self._tool_running(event)
            case ev.ToolCallFinished():
                self._tool_finished(event)
            case ev.StepFinished():
                self._step_finished(event)
            case ev.TurnFinished():
                self._turn_finished(event)

    def _step_started(self, event: ev.StepStarted) -> None:
        self.step = Step.objects.create(turn=self.turn, index=event.index)
        self.reasoning, self.content, self.calls = [], [], {}
        self.last_checkpoint = time.monotonic()

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self.last_checkpoint >= self.checkpoint_every:
            self.last_checkpoint = time.monotonic()
            Step.objects.filter(id=self.step.id).update(
                reasoning="".join(self.reasoning), content="".join(self.content)
            )

    def _tool_running(self, event: ev.ToolCallRunning) -> None:
        self.calls[event.call_id] = ToolCall.objects.create(
            step=self.step,
            index=len(self.calls),
            call_id=event.call_id,
            name=event.name,
            arguments=event.arguments,
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
