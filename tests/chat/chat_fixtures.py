"""Test helpers for the chat page: conversations and turns as the worker leaves them, and a publisher
that speaks the worker's protocol.

`EventPublisher` is not a mock: it publishes through `agent.stream` (the turn's Redis stream, then the
one `turn.events` Channels message to the conversation's group), the code the worker publishes with,
so the consumer under test sees what production sees.
"""

from __future__ import annotations

import asyncio
import json
import threading

import redis as redis_lib
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from agent.events import Event
from agent.stream import TurnStream, live_message
from chat import redis as chat_redis
from chat.models import Conversation, Message, Step, ToolCall, Turn

_loop: asyncio.AbstractEventLoop | None = None


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """One background event loop for synchronous publishers (the channel layer is asyncio)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        threading.Thread(target=_loop.run_forever, daemon=True, name="publisher-loop").start()
    return _loop


class EventPublisher:
    """Publish a turn's events with contiguous seq numbers, as the worker's publisher does."""

    def __init__(self, turn: Turn):
        self.turn = turn
        self.group = chat_redis.keys().group(turn.conversation.uuid)
        self.seq = 0
        self.redis = redis_lib.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        self.stream = TurnStream(self.redis, chat_redis.keys(), turn.uuid)

    def wire(self, event: Event) -> dict:
        (data,) = self.stream.append([event], after=self.seq)
        self.seq = data["seq"]
        return data

    def emit(self, event: Event, *, to_group: bool = True) -> dict:
        """Publish from synchronous code (also where a browser driver owns this thread's loop)."""
        data = self.wire(event)
        if to_group:
            coro = get_channel_layer().group_send(self.group, live_message([data]))
            asyncio.run_coroutine_threadsafe(coro, _publisher_loop()).result(10)
        return data

    async def aemit(self, event: Event, *, to_group: bool = True) -> dict:
        data = self.wire(event)
        if to_group:
            await get_channel_layer().group_send(self.group, live_message([data]))
        return data

    def drop_stream(self):
        self.stream.delete()


def make_conversation(owner, title="A chat") -> Conversation:
    return Conversation.objects.create(owner=owner, title=title)


def make_finished_turn(
    conversation, question="What is 2+2?", answer="**4**", reasoning="Adding two and two."
) -> Turn:
    """A done turn as the worker leaves it: user message, one step with a tool call, the answer message."""
    user_message = Message.objects.create(conversation=conversation, role="user", content=question)
    now = timezone.now()
    turn = Turn.objects.create(
        conversation=conversation,
        user_message=user_message,
        status=Turn.Status.DONE,
        steps=2,
        started=now,
        finished=now,
    )
    step = Step.objects.create(turn=turn, index=0, reasoning=reasoning, finish_reason="tool_calls")
    ToolCall.objects.create(
        step=step,
        call_id="functions.python:0",
        name="python",
        arguments=json.dumps({"code": "print(2+2)"}),
        result="4\n",
        status="done",
        finished=now,
    )
    Step.objects.create(turn=turn, index=1, reasoning="So it is 4.", content=answer, finish_reason="stop")
    Message.objects.create(
        conversation=conversation, role="assistant", content=answer, reasoning=reasoning, turn=turn
    )
    return turn
