"""A turn's page shows its whole trace as a timeline: steps in order, each with its tool calls in order,
every untrusted text escaped, in a fixed number of queries however long the turn ran."""

import json
import time

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def _page(client, turn):
    response = client.get(reverse("admin:chat_turn_change", args=[turn.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_timeline_shows_steps_and_tool_calls_in_the_order_they_happened(
    staff_client, staff_user, turn_factory
):
    turn = turn_factory(
        staff_user,
        steps=[
            {
                "reasoning": "First I should search for REASONING-ONE.",
                "tool_calls": [
                    {"name": "web_search", "arguments": '{"query": "QUERY-A"}', "result": "RESULT-A"},
                    {"name": "browse", "arguments": '{"url": "https://example.org/B"}', "result": "RESULT-B"},
                ],
            },
            {
                "reasoning": "Now run code REASONING-TWO.",
                "tool_calls": [{"name": "python", "result": "RESULT-C"}],
            },
            {"reasoning": "REASONING-THREE", "content": "ANSWER-CONTENT: Paris.", "finish_reason": "stop"},
        ],
    )
    html = _page(staff_client, turn)
    markers = [
        'id="step-0"',
        "REASONING-ONE",
        "QUERY-A",
        "RESULT-A",
        "https://example.org/B",
        "RESULT-B",
        'id="step-1"',
        "REASONING-TWO",
        "RESULT-C",
        'id="step-2"',
        "REASONING-THREE",
        "ANSWER-CONTENT: Paris.",
    ]
    positions = [html.index(marker) for marker in markers]
    assert positions == sorted(positions)
    assert "3 steps, 3 tool calls" in html
    assert "tool_calls" in html and "stop" in html  # finish reasons
    assert "prompt_tokens: 100" in html  # usage


def test_tool_arguments_are_pretty_json_when_valid_and_raw_otherwise(staff_client, staff_user, turn_factory):
    turn = turn_factory(
        staff_user,
        steps=[
            {
                "tool_calls": [
                    {"name": "web_search", "arguments": '{"query":"paris","top_k":3}'},
                    {"name": "web_search", "arguments": '{"query": "unterminated'},
                ]
            }
        ],
    )
    html = _page(staff_client, turn)
    pretty = json.dumps({"query": "paris", "top_k": 3}, indent=2).replace('"', "&quot;")
    assert pretty in html
    assert "{&quot;query&quot;: &quot;unterminated" in html
    assert "not valid JSON, shown raw" in html


def test_untrusted_text_from_model_tools_and_users_is_shown_as_text(staff_client, staff_user, turn_factory):
    turn = turn_factory(
        staff_user,
        question=XSS,
        steps=[
            {
                "reasoning": XSS,
                "content": XSS,
                "tool_calls": [
                    {
                        "name": XSS,
                        "arguments": json.dumps({"q": XSS}),
                        "result": XSS,
                        "status": "error",
                        "error": XSS,
                    }
                ],
            }
        ],
    )
    html = _page(staff_client, turn)
    assert "<script>alert" not in html
    assert "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    # Pretty-printed arguments keep the payload as a JSON string, still escaped.
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_turn_with_no_steps_yet_says_so(staff_client, staff_user, turn_factory):
    turn = turn_factory(staff_user, status="queued")
    assert "No steps recorded yet." in _page(staff_client, turn)


def _long_turn(turn_factory, owner, steps):
    return turn_factory(
        owner,
        steps=[
            {
                "reasoning": f"thinking about step {i} " * 20,
                "tool_calls": [
                    {
                        "name": "web_search",
                        "arguments": json.dumps({"query": f"q{i}"}),
                        "result": f"r{i} " * 50,
                    },
                    {
                        "name": "browse",
                        "arguments": json.dumps({"url": f"https://e.org/{i}"}),
                        "result": "page",
                    },
                ],
            }
            for i in range(steps)
        ],
    )


def test_timeline_query_count_does_not_grow_with_the_trace(
    staff_client, staff_user, turn_factory, django_assert_num_queries
):
    small = _long_turn(turn_factory, staff_user, 3)
    big = _long_turn(turn_factory, staff_user, 300)
    staff_client.get(reverse("admin:chat_turn_change", args=[small.pk]))  # warm the session and caches

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small_queries:
        _page(staff_client, small)
    with django_assert_num_queries(len(small_queries)):
        started = time.perf_counter()
        html = _page(staff_client, big)
        elapsed = time.perf_counter() - started
    assert len(small_queries) <= 12
    assert "300 steps, 600 tool calls" in html
    assert html.index('id="step-298"') < html.index('id="step-299"')
    # 300 steps and 600 tool calls render well under a couple of seconds even on a busy 2-core box.
    assert elapsed < 5, f"timeline took {elapsed:.2f}s"
