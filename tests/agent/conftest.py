"""Fixtures for the agent tests: a private Redis database, and conversations with a queued turn."""

import pytest
import redis as redis_lib

# Our own Redis DB number, so these tests never see other helpers' queues, streams or groups.
AGENT_TEST_REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def agent_redis(settings):
    settings.REDIS_URL = AGENT_TEST_REDIS_URL
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [AGENT_TEST_REDIS_URL], "capacity": 5000, "expiry": 60},
        }
    }
    client = redis_lib.Redis.from_url(AGENT_TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
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
