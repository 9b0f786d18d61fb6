"""Fixtures for the agent tests: this run's Redis (its namespace keeps it apart), and conversations
with a queued turn."""

import pytest
import redis as redis_lib
from django.conf import settings


@pytest.fixture
def agent_redis():
    """A client on the run's Redis; the turn streams and cancel flags a test leaves are removed after it."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter(f"{settings.KIMIWEB_NAMESPACE}:turn:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def make_turn(db):
    from django.contrib.auth import get_user_model

    from chat.models import Conversation, Message, Turn

    def make(question="What is the answer?", thinking=True, history=()):
        user, _ = get_user_model().objects.get_or_create(username="agent-tester")
        conversation = Conversation.objects.create(owner=user, title="agent test")
        for role, content in history:
            Message.objects.create(conversation=conversation, role=role, content=content)
        message = Message.objects.create(conversation=conversation, role="user", content=question)
        return Turn.objects.create(conversation=conversation, user_message=message, thinking=thinking)

    return make
