"""Fixtures for the chat page tests (helpers live in chat_fixtures.py)."""

import pytest
import redis as redis_lib
from chat_fixtures import EventPublisher
from django.conf import settings


@pytest.fixture
def publisher():
    made = []

    def make(turn) -> EventPublisher:
        pub = EventPublisher(turn)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.drop_stream()
        pub.redis.close()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit counters are per user id, and ids restart with each test database."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    for key in client.scan_iter(f"{settings.KIMIWEB_NAMESPACE}:chat:ratelimit:*"):
        client.delete(key)
    yield
    client.close()


@pytest.fixture
def close_consumer_connections():
    """Consumers query Postgres from asgiref's worker thread; close its connection so the test
    database can be dropped at the end."""
    yield
    from asgiref.sync import async_to_sync, sync_to_async
    from django.db import connections

    async_to_sync(sync_to_async(connections.close_all, thread_sensitive=True))()
