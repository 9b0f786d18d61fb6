"""The chat page over HTTP: owner-only access, CSRF, sidebar, branches, sharing and export."""

from __future__ import annotations

import json

import pytest
from chat_fixtures import make_conversation, make_finished_turn
from django.test import Client, override_settings

from chat.models import Conversation, Message, Turn, UserPreference

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_first_message_creates_a_conversation_with_a_queued_turn(as_alice, alice):
    response = as_alice.post("/c/new", {"text": "What is a monad?", "thinking": "on"})
    conv = Conversation.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == f"/c/{conv.uuid}/"
    turn = Turn.objects.get(conversation=conv)
    assert (
        turn.status == "queued" and turn.thinking is True and turn.user_message.content == "What is a monad?"
    )
    assert conv.title == "What is a monad?"
    page = as_alice.get(response["Location"]).content.decode()
    assert f'id="status-{turn.uuid}" data-status="queued"' in page  # the socket replays it from here
    assert f'ws-connect="/ws/conversations/{conv.uuid}/"' in page


def test_another_user_gets_404_for_every_page_and_action_of_a_conversation(client, alice, bob):
    conv = make_conversation(alice)
    turn = make_finished_turn(conv)
    client.force_login(bob)
    gets = [
        f"/c/{conv.uuid}/",
        f"/c/{conv.uuid}/export.md",
        f"/c/{conv.uuid}/export.json",
        f"/c/{conv.uuid}/delete",
    ]
    posts = [
        f"/c/{conv.uuid}/rename",
        f"/c/{conv.uuid}/pin",
        f"/c/{conv.uuid}/archive",
        f"/c/{conv.uuid}/delete",
        f"/c/{conv.uuid}/share",
        f"/c/{conv.uuid}/stop",
        f"/t/{turn.uuid}/regenerate",
        f"/m/{turn.user_message.uuid}/edit",
    ]
    for url in gets:
        assert client.get(url).status_code == 404, url
    for url in posts:
        assert client.post(url, {"title": "x", "text": "x"}).status_code == 404, url
    conv.refresh_from_db()
    assert conv.title == "A chat" and not conv.pinned and not conv.archived and conv.share_token is None
    assert alice.conversations.count() == 1
    assert f"/c/{conv.uuid}/" not in client.get("/").content.decode()  # not in bob's sidebar either


def test_forms_without_a_csrf_token_are_refused(alice):
    conv = make_conversation(alice)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post("/c/new", {"text": "hi"}).status_code == 403
    assert strict.post(f"/c/{conv.uuid}/delete").status_code == 403
    assert strict.post(f"/c/{conv.uuid}/rename", {"title": "x"}).status_code == 403
    assert strict.post("/preferences", {"theme": "dark"}).status_code == 403
    assert Conversation.objects.filter(pk=conv.pk).exists()
    page = strict.get(f"/c/{conv.uuid}/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in page and "X-CSRFToken" in page


def test_pages_carry_a_content_security_policy_without_inline_script(as_alice):
    response = as_alice.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in response.content.decode()  # every script has a src


def test_a_too_long_message_gets_a_clear_error(as_alice):
    with override_settings(CHAT_MAX_MESSAGE_CHARS=10):
        response = as_alice.post("/c/new", {"text": "x" * 11})
    assert response.status_code == 413
    assert "the limit is 10" in response.content.decode()
    assert not Conversation.objects.exists()


def test_turns_are_rate_limited_per_user(as_alice):
    with override_settings(CHAT_TURNS_PER_MINUTE=2):
        assert as_alice.post("/c/new", {"text": "one"}).status_code == 302
        assert as_alice.post("/c/new", {"text": "two"}).status_code == 302
        response = as_alice.post("/c/new", {"text": "three"})
    assert response.status_code == 429
    assert "wait a moment" in response.content.decode()


def test_finished_turns_render_thinking_tool_cards_and_markdown_answer(as_alice, alice):
    conv = make_conversation(alice)
    turn = make_finished_turn(conv, answer="Result: **4**")
    page = as_alice.get(f"/c/{conv.uuid}/").content.decode()
    assert f'id="tool-{turn.uuid}-2"' in page  # the python card sits between the two thinking segments
    assert (
        page.index("Adding two and two.") < page.index(f'id="tool-{turn.uuid}-2"') < page.index("So it is 4.")
    )
    assert '<span class="k">print</span>' in page or "print" in page
    assert "Result: <strong>4</strong>" in page
    assert "Thought for" in page


def test_sidebar_search_finds_conversations_by_title_and_by_message_text(as_alice, alice):
    a = make_conversation(alice, title="Trip planning")
    b = make_conversation(alice, title="Untitled")
    Message.objects.create(conversation=b, role="user", content="How do photosynthesis reactions work?")
    by_title = as_alice.get("/conversations/", {"q": "trip"}).content.decode()
    assert str(a.uuid) in by_title and str(b.uuid) not in by_title
    by_content = as_alice.get("/conversations/", {"q": "photosynthesis"}).content.decode()
    assert str(b.uuid) in by_content and str(a.uuid) not in by_content


def test_sidebar_is_paginated_newest_first_with_pinned_on_top(as_alice, alice):
    convs = [make_conversation(alice, title=f"chat {i:02d}") for i in range(35)]
    convs[0].pinned = True
    convs[0].save()
    first = as_alice.get("/").content.decode()
    assert first.index("chat 00") < first.index("chat 34") < first.index("chat 33")
    assert "chat 05" not in first and "Show more" in first
    more = as_alice.get("/conversations/", {"page": 2}).content.decode()
    assert "chat 05" in more and "chat 34" not in more


def test_rename_pin_archive_and_delete_after_confirmation(as_alice, alice):
    conv = make_conversation(alice)
    as_alice.post(f"/c/{conv.uuid}/rename", {"title": "Renamed"})
    as_alice.post(f"/c/{conv.uuid}/pin")
    conv.refresh_from_db()
    assert conv.title == "Renamed" and conv.pinned
    as_alice.post(f"/c/{conv.uuid}/archive")
    conv.refresh_from_db()
    assert conv.archived
    assert str(conv.uuid) not in as_alice.get("/").content.decode()
    assert str(conv.uuid) in as_alice.get("/", {"archived": "1"}).content.decode()
    confirm = as_alice.get(f"/c/{conv.uuid}/delete")
    assert confirm.status_code == 200 and "Delete this chat?" in confirm.content.decode()
    assert Conversation.objects.filter(pk=conv.pk).exists()  # asking is not deleting
    assert as_alice.post(f"/c/{conv.uuid}/delete").status_code == 302
    assert not Conversation.objects.filter(pk=conv.pk).exists()


def test_regenerate_starts_a_new_turn_and_keeps_the_earlier_answer_reachable(as_alice, alice):
    conv = make_conversation(alice)
    old = make_finished_turn(conv, answer="First answer")
    assert as_alice.post(f"/t/{old.uuid}/regenerate").status_code == 302
    new = Turn.objects.filter(conversation=conv).latest("created")
    assert (
        new.pk != old.pk and new.status == "queued" and new.user_message.content == old.user_message.content
    )
    visible = Message.objects.filter(conversation=conv, superseded_by__isnull=True)
    assert list(visible.values_list("role", flat=True)) == ["user"]  # the old answer left the thread
    page = as_alice.get(f"/c/{conv.uuid}/").content.decode()
    assert "Earlier version" in page and "First answer" in page


def test_edit_and_resend_replaces_the_last_question_and_keeps_the_original(as_alice, alice):
    conv = make_conversation(alice)
    old = make_finished_turn(conv, question="Capital of Frnace?", answer="Paris")
    response = as_alice.post(
        f"/m/{old.user_message.uuid}/edit", {"text": "Capital of France?", "thinking": "on"}
    )
    assert response.status_code == 302
    new = Turn.objects.filter(conversation=conv).latest("created")
    assert new.user_message.content == "Capital of France?" and new.thinking
    old.user_message.refresh_from_db()
    assert old.user_message.superseded_by == new.user_message
    page = as_alice.get(f"/c/{conv.uuid}/").content.decode()
    assert "Capital of Frnace?" in page  # reachable under "Earlier version"


def test_only_the_last_exchange_can_be_edited_and_not_while_it_runs(as_alice, alice):
    conv = make_conversation(alice)
    first = make_finished_turn(conv, question="one")
    make_finished_turn(conv, question="two")
    assert as_alice.post(f"/m/{first.user_message.uuid}/edit", {"text": "uno"}).status_code == 400
    as_alice.post(f"/t/{first.uuid}/regenerate")
    running = Turn.objects.filter(conversation=conv).latest("created")
    response = as_alice.post(f"/m/{running.user_message.uuid}/edit", {"text": "again"})
    assert response.status_code == 409


def test_share_link_is_read_only_and_revocable(as_alice, alice):
    conv = make_conversation(alice, title="Shared stuff")
    make_finished_turn(conv, answer="Shared **answer**")
    as_alice.post(f"/c/{conv.uuid}/share")
    conv.refresh_from_db()
    assert conv.share_token
    page = as_alice.get(f"/c/{conv.uuid}/").content.decode()
    assert f"/s/{conv.share_token}/" in page
    stranger = Client()
    shared = stranger.get(f"/s/{conv.share_token}/")
    body = shared.content.decode()
    assert shared.status_code == 200 and "Shared <strong>answer</strong>" in body and "Read-only" in body
    assert "ws-connect" not in body and 'id="composer"' not in body and "Regenerate" not in body
    token = conv.share_token
    as_alice.post(f"/c/{conv.uuid}/share", {"revoke": "1"})
    assert stranger.get(f"/s/{token}/").status_code == 404


def test_export_as_markdown_and_json(as_alice, alice):
    conv = make_conversation(alice, title="Arithmetic")
    make_finished_turn(conv, question="What is 2+2?", answer="It is **4**.")
    md = as_alice.get(f"/c/{conv.uuid}/export.md")
    assert md["Content-Type"].startswith("text/markdown")
    assert "attachment" in md["Content-Disposition"]
    text = md.content.decode()
    assert text.startswith("# Arithmetic") and "What is 2+2?" in text and "It is **4**." in text
    assert "`python`" in text
    data = json.loads(as_alice.get(f"/c/{conv.uuid}/export.json").content)
    exchange = data["exchanges"][0]
    assert exchange["user"]["content"] == "What is 2+2?"
    assert exchange["turn"]["answer"] == "It is **4**."
    assert exchange["turn"]["steps"][0]["tool_calls"][0]["name"] == "python"
    assert as_alice.get(f"/c/{conv.uuid}/export.pdf").status_code == 404


def test_long_thinking_toggle_and_theme_are_remembered(as_alice, alice):
    as_alice.post("/preferences", {"field": "long_thinking"})  # the toggle, unchecked
    assert UserPreference.objects.get(user=alice).long_thinking is False
    assert 'id="thinking-toggle"' in (page := as_alice.get("/").content.decode())
    assert 'id="thinking-toggle" checked' not in page
    as_alice.post("/preferences", {"field": "long_thinking", "thinking": "on"})
    as_alice.post("/preferences", {"theme": "dark"})
    pref = UserPreference.objects.get(user=alice)
    assert pref.long_thinking is True and pref.theme == "dark"
    assert 'data-theme="dark"' in as_alice.get("/").content.decode()
