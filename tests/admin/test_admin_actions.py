"""Operator actions: cancelling a turn raises its cancel flag in the real Redis (the agent's contract);
re-running a failed turn queues a new turn for the same user message and enqueues it on commit."""

import pytest
from django.urls import reverse

from chat import redis as chat_redis
from chat import tasks
from chat.models import Turn

pytestmark = pytest.mark.django_db


def cancel_key(turn_uuid) -> str:
    return chat_redis.keys().cancel(turn_uuid)


def stream_key(turn_uuid) -> str:
    return chat_redis.keys().stream(turn_uuid)


def _act(client, action, turns):
    return client.post(
        reverse("admin:chat_turn_changelist"),
        {"action": action, "_selected_action": [t.pk for t in turns]},
        follow=True,
    )


@pytest.fixture
def cleanup_flags(redis_client):
    keys = []
    yield keys
    if keys:
        redis_client.delete(*keys)


def test_cancel_action_raises_the_flag_for_running_and_queued_turns_only(
    staff_client, staff_user, turn_factory, redis_client, cleanup_flags
):
    running = turn_factory(staff_user, status="running")
    queued = turn_factory(staff_user, status="queued")
    done = turn_factory(staff_user, status="done")
    cleanup_flags.extend(cancel_key(t.uuid) for t in (running, queued, done))
    cleanup_flags.extend(stream_key(t.uuid) for t in (running, queued, done))

    response = _act(staff_client, "cancel_turns", [running, queued, done])

    assert response.status_code == 200
    html = response.content.decode()
    assert "Cancel requested for 2 turn(s)." in html
    assert "Skipped 1 turn(s)" in html
    assert redis_client.get(cancel_key(running.uuid)) == "1"
    assert redis_client.get(cancel_key(queued.uuid)) == "1"
    assert 0 < redis_client.ttl(cancel_key(running.uuid)) <= 7 * 24 * 3600  # the flag expires
    assert redis_client.get(cancel_key(done.uuid)) is None
    # A turn no worker has claimed yet is cancelled at once (as the chat's Stop does); a running one
    # is left for its worker to stop at its next check.
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == Turn.Status.CANCELLED
    assert running.status == Turn.Status.RUNNING


def test_cancel_button_on_the_turn_page_raises_the_flag(
    staff_client, staff_user, turn_factory, redis_client, cleanup_flags
):
    turn = turn_factory(staff_user, status="running")
    cleanup_flags.append(cancel_key(turn.uuid))
    page = staff_client.get(reverse("admin:chat_turn_change", args=[turn.pk])).content.decode()
    cancel_url = reverse("admin:chat_turn_cancel", args=[turn.pk])
    assert f'action="{cancel_url}"' in page

    assert staff_client.get(cancel_url).status_code == 405  # a state change is a POST, never a link
    response = staff_client.post(cancel_url)
    assert response.status_code == 302
    assert redis_client.get(cancel_key(turn.uuid)) == "1"


def test_cancel_button_is_absent_for_a_finished_turn(staff_client, staff_user, turn_factory):
    turn = turn_factory(staff_user, status="done")
    page = staff_client.get(reverse("admin:chat_turn_change", args=[turn.pk])).content.decode()
    assert reverse("admin:chat_turn_cancel", args=[turn.pk]) not in page


def test_rerun_action_queues_a_new_turn_for_the_same_user_message(
    staff_client, staff_user, turn_factory, django_capture_on_commit_callbacks, monkeypatch, settings
):
    failed = turn_factory(staff_user, status="failed", error="model unavailable")
    done = turn_factory(staff_user, status="done")

    # Callbacks are captured, not executed: running them would publish to the shared broker queue,
    # where another test session's worker could pick the turn up.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _act(staff_client, "rerun_turns", [failed, done])

    assert "Queued 1 new turn(s)" in response.content.decode()
    assert "Skipped 1 turn(s) that had not failed." in response.content.decode()
    new = Turn.objects.exclude(pk__in=[failed.pk, done.pk]).get()
    assert new.status == Turn.Status.QUEUED
    assert new.user_message_id == failed.user_message_id
    assert new.conversation_id == failed.conversation_id
    failed.refresh_from_db()
    assert failed.status == Turn.Status.FAILED  # the failed attempt stays as it was, for the record
    assert new.model == settings.LLM_MODEL  # the same service as the chat's own turns: the model is recorded
    assert len(callbacks) == 1
    queued = []
    monkeypatch.setattr(tasks.run_turn, "delay", queued.append)
    callbacks[0]()
    assert queued == [new.pk]


def test_rerun_button_is_offered_only_for_a_failed_turn(staff_client, staff_user, turn_factory):
    failed = turn_factory(staff_user, status="failed")
    running = turn_factory(staff_user, status="running")
    page = staff_client.get(reverse("admin:chat_turn_change", args=[failed.pk])).content.decode()
    assert reverse("admin:chat_turn_rerun", args=[failed.pk]) in page
    page = staff_client.get(reverse("admin:chat_turn_change", args=[running.pk])).content.decode()
    assert reverse("admin:chat_turn_rerun", args=[running.pk]) not in page
    # A POST for a turn that has not failed changes nothing.
    staff_client.post(reverse("admin:chat_turn_rerun", args=[running.pk]))
    assert Turn.objects.count() == 2
