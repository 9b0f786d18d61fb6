"""Changelists and change pages: they render, their filters and search narrow to the right rows, and
their query counts stay flat however many rows a page shows (no N+1)."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chat.models import Message

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def _short(turn):
    return str(turn.uuid)[:8]


def _get(client, view_name, /, **params):
    response = client.get(reverse(view_name), params)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


@pytest.fixture
def trio(staff_user, turn_factory):
    """Three turns by two users on different days, with different tools and outcomes."""
    bob = get_user_model().objects.create_user("bob", password="s3cret-pass-123")
    now = timezone.now()
    searched = turn_factory(
        staff_user,
        title="Trip planning",
        question="Best trains to Lyon?",
        steps=[{"tool_calls": [{"name": "web_search"}]}],
        created=now - dt.timedelta(days=10),
    )
    failed = turn_factory(
        bob,
        status="failed",
        title="Maths",
        question="integrate x^2 dx",
        steps=[{"tool_calls": [{"name": "python", "status": "error"}]}],
        error="model unavailable",
    )
    running = turn_factory(bob, status="running", title="News", question="latest kernel release")
    return {"searched": searched, "failed": failed, "running": running, "bob": bob}


def test_turn_list_filters_by_status_user_date_and_tool(staff_client, trio):
    by_status = _get(staff_client, "admin:chat_turn_changelist", status__exact="failed")
    assert _short(trio["failed"]) in by_status and _short(trio["searched"]) not in by_status

    by_user = _get(staff_client, "admin:chat_turn_changelist", conversation__owner__id__exact=trio["bob"].pk)
    assert _short(trio["failed"]) in by_user and _short(trio["running"]) in by_user
    assert _short(trio["searched"]) not in by_user

    since = (timezone.now() - dt.timedelta(days=1)).isoformat()
    by_date = _get(staff_client, "admin:chat_turn_changelist", created__gte=since)
    assert _short(trio["searched"]) not in by_date and _short(trio["running"]) in by_date

    by_tool = _get(staff_client, "admin:chat_turn_changelist", tool="web_search")
    assert _short(trio["searched"]) in by_tool
    assert _short(trio["failed"]) not in by_tool and _short(trio["running"]) not in by_tool


def test_turn_list_searches_titles_users_message_text_and_uuids(staff_client, trio):
    for term, expected in (
        ("Trip planning", "searched"),
        ("bob", "failed"),
        ("integrate x^2", "failed"),
        (str(trio["running"].uuid), "running"),
    ):
        html = _get(staff_client, "admin:chat_turn_changelist", q=term)
        assert _short(trio[expected]) in html, term
    html = _get(staff_client, "admin:chat_turn_changelist", q="integrate x^2")
    assert _short(trio["searched"]) not in html


def test_turn_list_shows_tool_call_counts_and_owner(staff_client, trio):
    html = _get(staff_client, "admin:chat_turn_changelist")
    assert 'class="field-tool_call_count">1<' in html
    assert ">bob<" in html


def test_conversation_list_filters_and_searches_message_text(staff_client, trio):
    html = _get(staff_client, "admin:chat_conversation_changelist", q="kernel release")
    assert "News" in html and "Maths" not in html
    html = _get(staff_client, "admin:chat_conversation_changelist", owner__id__exact=trio["bob"].pk)
    assert "News" in html and "Maths" in html and "Trip planning" not in html


def test_conversation_page_shows_its_messages_inline_escaped_and_read_only(
    staff_client, staff_user, turn_factory
):
    turn = turn_factory(staff_user, title="Hostile", question=XSS)
    Message.objects.create(
        conversation=turn.conversation,
        role="assistant",
        content="the answer " + XSS,
        reasoning="why " + XSS,
        turn=turn,
    )
    html = _get_change(staff_client, "admin:chat_conversation_change", turn.conversation.pk)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "the answer &lt;script&gt;" in html
    assert 'name="messages-0-content"' not in html  # shown, never editable
    assert reverse("admin:chat_turn_change", args=[turn.pk]) in html


def _get_change(client, name, pk):
    response = client.get(reverse(name, args=[pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_tool_call_list_filters_by_name_and_status(staff_client, trio):
    html = _get(staff_client, "admin:chat_toolcall_changelist", name__exact="python")
    assert "functions.python" in html and "functions.web_search" not in html
    html = _get(staff_client, "admin:chat_toolcall_changelist", status__exact="error")
    assert "functions.python" in html and "functions.web_search" not in html


def test_step_and_tool_call_pages_render_read_only(staff_client, trio):
    call_list = _get(staff_client, "admin:chat_step_changelist")
    assert "Step 0" in call_list
    step = trio["failed"].step_rows.get()
    call = step.tool_calls.get()
    assert 'name="reasoning"' not in _get_change(staff_client, "admin:chat_step_change", step.pk)
    html = _get_change(staff_client, "admin:chat_toolcall_change", call.pk)
    assert 'name="result"' not in html and "python" in html


def _queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


@pytest.mark.parametrize(
    "changelist",
    ["admin:chat_turn_changelist", "admin:chat_conversation_changelist", "admin:chat_toolcall_changelist"],
)
def test_changelist_query_count_does_not_grow_with_rows(staff_client, staff_user, turn_factory, changelist):
    def add(n):
        for i in range(n):
            turn_factory(staff_user, title=f"conv {i}", steps=[{"tool_calls": [{"name": f"tool{i % 3}"}]}])

    url = reverse(changelist)
    add(2)
    _queries(staff_client, url)  # warm up
    few = _queries(staff_client, url)
    add(25)
    many = _queries(staff_client, url)
    assert many == few, f"{changelist}: {few} queries for 2 rows, {many} for 27"
