"""Turn limits and shared links against the live Daphne.

Turns are bounded per client address (several accounts behind one address share the bound) and by
the queue depth of the whole installation. A shared link shows the questions and answers only unless
its owner chose to include reasoning and tool details.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from web_helpers import PASSWORD, csrf_post, log_in

from agent.corpus import SearchHit, SearchResults
from agent.tools.web_search import fit_results
from chat.models import Conversation, Message, Step, ToolCall, Turn

pytestmark = pytest.mark.django_db(transaction=True)


def _user_client(browser_like, name):
    get_user_model().objects.create_user(name, password=PASSWORD)
    client = browser_like()
    assert log_in(client, name).status_code == 302
    return client


def _new_chat(client, text="Hello"):
    return csrf_post(client, "/c/new", {"text": text, "thinking": "on"}, form_page="/")


def test_accounts_behind_one_address_share_its_turn_limit(site, browser_like, db_write):
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)  # keep the four posts in one one-minute window
    ada, bob = _user_client(browser_like, "ada"), _user_client(browser_like, "bob")
    assert _new_chat(ada).status_code == 302
    assert _new_chat(ada).status_code == 302
    assert _new_chat(bob).status_code == 302  # CHAT_TURNS_PER_MINUTE_PER_IP=3
    refused = _new_chat(bob)
    assert refused.status_code == 429
    assert "from your address this minute" in refused.text
    assert Turn.objects.count() == 3


def test_a_full_queue_answers_busy_instead_of_queueing_more(site, browser_like, db_write):
    waiting = get_user_model().objects.create_user("waiting", password=PASSWORD)
    for n in range(4):  # CHAT_MAX_QUEUED_TURNS=4
        conv = Conversation.objects.create(owner=waiting, title=f"queued {n}")
        question = Message.objects.create(conversation=conv, role=Message.Role.USER, content="?")
        Turn.objects.create(conversation=conv, user_message=question, status=Turn.Status.QUEUED)
    refused = _new_chat(_user_client(browser_like, "ada"))
    assert refused.status_code == 503
    assert "busy" in refused.text and "try again" in refused.text
    assert Turn.objects.count() == 4


SECRETS = ["Let me compute it in Python", "print(6 * 7)  # multiply", "42-from-the-sandbox", "Tide tables"]
SECRETS += ["High tide comes twice a day", "https://tides.example.org/tables"]


def _finished_turn_with_tools(owner) -> Conversation:
    """A done turn as the worker records it: reasoning, a python call and a web search, then an answer."""
    conv = Conversation.objects.create(owner=owner, title="Sixes and sevens")
    question = Message.objects.create(conversation=conv, role=Message.Role.USER, content="What is 6*7?")
    now = timezone.now()
    turn = Turn.objects.create(
        conversation=conv, user_message=question, status=Turn.Status.DONE, steps=2, started=now, finished=now
    )
    step = Step.objects.create(turn=turn, index=0, reasoning=SECRETS[0], finish_reason="tool_calls")
    ToolCall.objects.create(
        step=step,
        index=0,
        call_id="functions.python:0",
        name="python",
        arguments='{"code": "print(6 * 7)  # multiply"}',
        result="42-from-the-sandbox\n",
        status="done",
        finished=now,
    )
    results = SearchResults("tides", [SearchHit(title=SECRETS[3], url=SECRETS[5], snippet=SECRETS[4])])
    ToolCall.objects.create(
        step=step,
        index=1,
        call_id="functions.web_search:1",
        name="web_search",
        arguments='{"query": "tides"}',
        result=fit_results(results, 8000),
        status="done",
        finished=now,
    )
    Step.objects.create(turn=turn, index=1, content="It is **42**.", finish_reason="stop")
    Message.objects.create(conversation=conv, role=Message.Role.ASSISTANT, content="It is **42**.", turn=turn)
    return conv


def test_a_shared_link_shows_only_the_answer_unless_the_owner_includes_details(site, browser_like, db_write):
    owner = _user_client(browser_like, "ada")
    conv = _finished_turn_with_tools(get_user_model().objects.get(username="ada"))
    page = f"/c/{conv.uuid}/"
    dialog = owner.get(page).text
    assert "The link shows your questions and the answers." in dialog
    assert "Include reasoning and tool details" in dialog and "Allow file downloads" in dialog

    assert csrf_post(owner, f"/c/{conv.uuid}/share", {}, form_page=page).status_code == 302
    conv.refresh_from_db()
    assert conv.share_token and not conv.share_details and not conv.share_files
    shared = browser_like().get(f"/s/{conv.share_token}/")
    assert shared.status_code == 200
    assert "What is 6*7?" in shared.text and "It is <strong>42</strong>." in shared.text
    for secret in SECRETS + ["tool-", "python", "Thought for"]:
        assert secret not in shared.text, secret

    csrf_post(owner, f"/c/{conv.uuid}/share", {"details": "on"}, form_page=page)
    conv.refresh_from_db()
    assert conv.share_details and not conv.share_files
    assert "with the reasoning and every tool call" in owner.get(page).text
    detailed = browser_like().get(f"/s/{conv.share_token}/").text
    assert "It is <strong>42</strong>." in detailed
    for secret in ["Let me compute it in Python", "42-from-the-sandbox", "tides.example.org"]:
        assert secret in detailed, secret

    csrf_post(owner, f"/c/{conv.uuid}/share", {"files": "on"}, form_page=page)
    conv.refresh_from_db()
    assert conv.share_files and not conv.share_details
    assert "and lets readers download the chat's files" in owner.get(page).text
