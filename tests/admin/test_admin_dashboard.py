"""The dashboard: numbers aggregated in Postgres (counts per day and status, p50/p95 turn duration,
tool calls by tool) and drawn as inline SVG with escaped labels, in a fixed handful of queries."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from console.selectors import build_dashboard

pytestmark = pytest.mark.django_db

EVIL_TOOL = "<b>evil</b>"


@pytest.fixture
def history(staff_user, turn_factory):
    """Six turns over three days with known outcomes and durations (seconds): 10, 20 | 4, 5 | 30, running."""
    today = timezone.localtime().replace(hour=0, minute=30, second=0, microsecond=0)
    two_days_ago, yesterday = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    search = {"tool_calls": [{"name": "web_search"}, {"name": "web_search", "status": "error"}]}
    turn_factory(staff_user, created=two_days_ago, duration=dt.timedelta(seconds=10), steps=[search])
    turn_factory(staff_user, created=two_days_ago, duration=dt.timedelta(seconds=20), steps=[search])
    turn_factory(
        staff_user,
        status="failed",
        error="model unavailable <x>",
        created=yesterday,
        duration=dt.timedelta(seconds=4),
        steps=[{"tool_calls": [{"name": EVIL_TOOL}]}],
    )
    turn_factory(staff_user, status="cancelled", created=yesterday, duration=dt.timedelta(seconds=5))
    turn_factory(
        staff_user,
        created=today,
        duration=dt.timedelta(seconds=30),
        steps=[{"tool_calls": [{"name": "python"}]}],
    )
    turn_factory(staff_user, status="running", created=today)
    # Outside a 7-day window: must not count.
    turn_factory(
        staff_user, created=today - dt.timedelta(days=40), steps=[{"tool_calls": [{"name": "old_tool"}]}]
    )


def test_dashboard_counts_turns_per_day_and_status(history):
    board = build_dashboard(days=7)
    assert len(board.per_day) == 7
    two_days_ago, yesterday, today = board.per_day[-3:]
    assert (two_days_ago.turns, two_days_ago.done, two_days_ago.failed) == (2, 2, 0)
    assert (yesterday.turns, yesterday.failed, yesterday.cancelled) == (2, 1, 1)
    assert (today.turns, today.done, today.other) == (2, 1, 1)
    assert sum(d.turns for d in board.per_day[:-3]) == 0
    totals = board.totals
    assert (totals["turns"], totals["done"], totals["failed"], totals["cancelled"], totals["running"]) == (
        6,
        3,
        1,
        1,
        1,
    )
    assert totals["failure_rate"] == pytest.approx(1 / 5)


def test_dashboard_percentiles_are_postgres_percentile_cont(history):
    board = build_dashboard(days=7)
    # Finished durations 4, 5, 10, 20, 30 s: p50 = 10 s; p95 = 20 + 0.8 * (30 - 20) = 28 s.
    assert board.totals["p50"] == dt.timedelta(seconds=10)
    assert board.totals["p95"] == dt.timedelta(seconds=28)
    two_days_ago = board.per_day[-3]
    assert two_days_ago.p50 == dt.timedelta(seconds=15)
    assert board.per_day[-1].p50 == dt.timedelta(seconds=30)  # the running turn has no duration yet


def test_dashboard_counts_tool_calls_by_tool(history):
    tools = {t.name: t for t in build_dashboard(days=7).tools}
    assert set(tools) == {"web_search", "python", EVIL_TOOL}
    assert (tools["web_search"].calls, tools["web_search"].errors) == (4, 2)
    assert tools["python"].calls == 1
    assert build_dashboard(days=7).tools[0].name == "web_search"  # most used first
    assert "old_tool" in {t.name for t in build_dashboard(days=60).tools}


def test_dashboard_page_renders_escaped_svg_charts_and_numbers(staff_client, history):
    response = staff_client.get(reverse("admin:chat_dashboard"), {"days": 7})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<svg") >= 4 + 1  # four charts (plus the admin's own icon sprite)
    for chart in ("chart-turns-per-day", "chart-duration", "chart-tool-calls", "chart-failures"):
        assert f'id="{chart}"' in html
    assert 'data-stat="turns">6<' in html
    assert 'data-stat="failed">1<' in html
    assert 'data-stat="tool_calls">6<' in html
    assert 'data-stat="failure_rate">20%<' in html
    assert "<b>evil</b>" not in html
    assert "&lt;b&gt;evil&lt;/b&gt;" in html
    assert "model unavailable &lt;x&gt;" in html  # the recent-failures table


def test_dashboard_query_count_is_fixed(staff_client, history, staff_user, turn_factory):
    url = reverse("admin:chat_dashboard")
    staff_client.get(url)
    with CaptureQueriesContext(connection) as before:
        staff_client.get(url)
    for i in range(20):
        turn_factory(staff_user, status="failed", steps=[{"tool_calls": [{"name": f"tool{i}"}]}])
    with CaptureQueriesContext(connection) as after:
        staff_client.get(url)
    assert len(after) == len(before) <= 8


def test_dashboard_rejects_nonsense_ranges_calmly(staff_client, history):
    url = reverse("admin:chat_dashboard")
    assert staff_client.get(url, {"days": "lots"}).status_code == 200
    assert "Last 366 days" in staff_client.get(url, {"days": 100000}).content.decode()


def test_dashboard_with_no_turns_at_all_still_renders(staff_client):
    response = staff_client.get(reverse("admin:chat_dashboard"))
    assert response.status_code == 200
    assert "No tool calls in this period." in response.content.decode()
