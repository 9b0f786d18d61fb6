"""Celery: the app's settings for long agent turns, and a real round trip through a worker on the real Redis broker."""

import uuid

import pytest
import redis as redis_lib
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from kimiweb.celery import app


@app.task(name="tests.platform.multiply")
def multiply(a: int, b: int) -> int:
    return a * b


def test_agent_turns_are_acknowledged_late_and_survive_a_lost_worker():
    assert app.conf.task_default_queue == "agent"
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    # Redis redelivers an unacknowledged task after the visibility timeout: it must outlast the longest turn.
    assert app.conf.broker_transport_options["visibility_timeout"] > settings.AGENT_MAX_TURN_SECONDS


def test_the_broker_and_results_are_the_configured_redis():
    assert app.conf.broker_url == settings.CELERY_BROKER_URL
    assert app.conf.broker_url.startswith("redis://")
    assert app.conf.result_backend.startswith("redis://")


def test_every_broker_and_result_key_carries_the_namespace():
    prefix = f"{settings.KIMIWEB_NAMESPACE}:"
    assert app.conf.broker_transport_options["global_keyprefix"] == prefix
    assert app.conf.result_backend_transport_options["global_keyprefix"] == prefix


def test_the_turn_tasks_keep_their_registered_names():
    app.loader.import_default_modules()
    assert {"agent.tasks.run_turn", "agent.tasks.resume_orphaned_turns"} <= set(app.tasks)
    assert app.conf.beat_schedule["resume-orphaned-turns"]["task"] == "agent.tasks.resume_orphaned_turns"


@pytest.mark.timeout(60)
def test_a_task_round_trips_through_a_real_worker_under_the_namespace():
    queue = f"platform-test-{uuid.uuid4().hex[:8]}"
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=20):
        result = multiply.apply_async((6, 7), queue=queue)
        assert result.get(timeout=30) == 42
        assert result.status == "SUCCESS"
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    try:
        assert client.exists(f"{settings.KIMIWEB_NAMESPACE}:celery-task-meta-{result.id}")
        assert not client.exists(f"celery-task-meta-{result.id}")
    finally:
        client.close()


def test_uploads_go_to_the_documents_queue_and_only_turn_workers_self_test_the_sandbox():
    from types import SimpleNamespace

    from celery import Celery

    from chat.sandbox_status import consumes_turns

    app.loader.import_default_modules()
    route = app.amqp.router.route({}, "documents.tasks.extract_file")
    assert route["queue"].name == settings.DOCUMENTS_QUEUE == "documents"
    assert app.amqp.router.route({}, "agent.tasks.run_turn")["queue"].name == "agent"
    for queues, runs_turns in ((["agent"], True), (["documents"], False), (["agent", "documents"], True)):
        probe = Celery("probe", set_as_current=False)
        probe.amqp.queues.select(queues)  # what `-Q` does
        assert consumes_turns(SimpleNamespace(app=probe)) is runs_turns
