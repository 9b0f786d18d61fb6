"""The conversation socket over the real ASGI stack (session auth, origin check) and the real channels-redis layer."""

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agent.events import ContentDelta
from agent.stream import live_message, wire
from chat import redis as chat_redis
from chat.models import Conversation, Message, Turn
from kimiweb.asgi import application

# The consumer reads the database from another thread, so rows must be committed, not in a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


@database_sync_to_async
def session_cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


@database_sync_to_async
def conversation_of(user) -> Conversation:
    return Conversation.objects.create(owner=user, title="private")


@database_sync_to_async
def running_turn_in(conversation) -> Turn:
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="Hi?")
    return Turn.objects.create(conversation=conversation, user_message=question, status=Turn.Status.RUNNING)


async def receive_until(communicator, needle: str, timeout: float = 10) -> str:
    """Frames the socket sends, joined, up to the one containing `needle` (the format is the UI's business)."""
    seen = ""
    while needle not in seen:
        seen += await communicator.receive_from(timeout=timeout)
    return seen


def socket(conversation_uuid, *headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, f"/ws/conversations/{conversation_uuid}/", headers=list(headers)
    )


async def test_the_channel_layer_is_redis():
    assert type(get_channel_layer()).__module__.startswith("channels_redis")


async def test_the_owner_connects_and_receives_events_sent_to_the_conversation_group(make_user):
    alice = await database_sync_to_async(make_user)("alice")
    conversation = await conversation_of(alice)
    communicator = socket(conversation.uuid, ORIGIN, (b"cookie", await session_cookie_for(alice)))
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"action": "resume"})  # what the page sends on every (re)connect

    turn = await running_turn_in(conversation)
    marker = f"hello-through-redis-{uuid.uuid4().hex[:8]}"
    event = wire(ContentDelta(text=marker), seq=1, turn_uuid=turn.uuid)
    await get_channel_layer().group_send(chat_redis.keys().group(conversation.uuid), live_message([event]))
    assert marker in await receive_until(communicator, marker)
    await communicator.disconnect()


async def test_another_user_is_refused(make_user):
    alice = await database_sync_to_async(make_user)("alice")
    bob = await database_sync_to_async(make_user)("bob")
    conversation = await conversation_of(alice)
    communicator = socket(conversation.uuid, ORIGIN, (b"cookie", await session_cookie_for(bob)))
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4404
    await communicator.disconnect()  # ends the consumer's channel-layer listener (else teardown can hang)


async def test_an_anonymous_visitor_is_refused(make_user):
    alice = await database_sync_to_async(make_user)("alice")
    conversation = await conversation_of(alice)
    communicator = socket(conversation.uuid, ORIGIN)
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused_even_with_the_owners_cookie(make_user):
    alice = await database_sync_to_async(make_user)("alice")
    conversation = await conversation_of(alice)
    communicator = socket(
        conversation.uuid, (b"origin", b"https://evil.example"), (b"cookie", await session_cookie_for(alice))
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()
