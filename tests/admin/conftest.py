"""Fixtures for the admin console tests: staff and plain users, and turns with realistic traces."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import redis as redis_lib
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat.models import Conversation, Message, Step, ToolCall, Turn

_counter = itertools.count()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 costs about a second per user on this machine; these tests sign in with force_login.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_superuser("operator", "operator@example.org", "s3cret-pass-123")


@pytest.fixture
def plain_user(db):
    return get_user_model().objects.create_user("alice", "alice@example.org", "s3cret-pass-123")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def redis_client():
    """The real Redis the console writes cancel flags to (settings.REDIS_URL)."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    yield client
    client.close()


def make_turn(
    owner,
    *,
    status=Turn.Status.DONE,
    question="What is the capital of France?",
    title="Geography",
    steps=(),
    created: dt.datetime | None = None,
    duration: dt.timedelta | None = dt.timedelta(seconds=5),
    error="",
    conversation=None,
) -> Turn:
    """A turn with its conversation, user message and trace.

    `steps` is a sequence of dicts: {"reasoning", "content", "finish_reason", "usage",
    "tool_calls": [{"name", "arguments", "result", "status", "error", "ms"}]}.
    """
    conversation = conversation or Conversation.objects.create(owner=owner, title=title)
    message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    turn = Turn.objects.create(conversation=conversation, user_message=message, status=status, error=error)
    created = created or timezone.now()
    started = created + dt.timedelta(milliseconds=100)
    finished = started + duration if duration is not None and status in Turn.FINISHED else None
    Turn.objects.filter(pk=turn.pk).update(
        created=created, started=started, finished=finished, steps=len(steps)
    )
    step_rows, call_rows = [], []
    for i, spec in enumerate(steps):
        step_started = started + dt.timedelta(seconds=i)
        step = Step(
            turn=turn,
            index=i,
            reasoning=spec.get("reasoning", ""),
            content=spec.get("content", ""),
            finish_reason=spec.get("finish_reason", "tool_calls" if spec.get("tool_calls") else "stop"),
            usage=spec.get("usage", {"prompt_tokens": 100 + i, "completion_tokens": 10}),
            finished=step_started + dt.timedelta(milliseconds=800),
        )
        step_rows.append((step, step_started, spec.get("tool_calls", ())))
    if step_rows:
        # `started` is auto_now_add, so the real timeline is written in a second pass.
        Step.objects.bulk_create([s for s, _, _ in step_rows])
        Step.objects.bulk_update([_with(s, started=t) for s, t, _ in step_rows], ["started"], batch_size=500)
    for step, step_started, calls in step_rows:
        for j, call in enumerate(calls):
            call_started = step_started + dt.timedelta(milliseconds=100 * (j + 1))
            call_rows.append(
                (
                    ToolCall(
                        step=step,
                        index=j,
                        call_id=f"functions.{call['name']}:{next(_counter)}",
                        name=call["name"],
                        arguments=call.get("arguments", "{}"),
                        result=call.get("result", ""),
                        status=call.get("status", ToolCall.Status.DONE),
                        error=call.get("error", ""),
                        finished=call_started + dt.timedelta(milliseconds=call.get("ms", 250)),
                    ),
                    call_started,
                )
            )
    if call_rows:
        ToolCall.objects.bulk_create([c for c, _ in call_rows])
        ToolCall.objects.bulk_update([_with(c, started=t) for c, t in call_rows], ["started"], batch_size=500)
    turn.refresh_from_db()
    return turn


def _with(obj, **fields):
    for name, value in fields.items():
        setattr(obj, name, value)
    return obj


@pytest.fixture
def turn_factory(db):
    return make_turn
