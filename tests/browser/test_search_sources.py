"""The sources panel and the search card for a real search: a live stack (Daphne, a real Celery
worker) where the model, the border double that speaks the streaming protocol, asks for a search,
the real `web_search` tool runs its `local` backend over Postgres, and the page lists the hits.

The hits come from documents this test stores; nothing here writes a search result by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import log_in
from playwright.sync_api import expect
from test_live_stack import send, start_worker

from chat.models import ToolCall, Turn
from corpus.models import Document

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOCUMENTS = [
    (
        "https://docs.example.org/tides",
        "Why the sea has tides",
        "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans. "
        "Spring tides happen when the Sun and the Moon line up.",
    ),
    (
        "https://science.example.net/moon-gravity",
        "The Moon's gravity and the oceans",
        "The Moon's gravity raises two bulges of water, so most coasts see two high tides a day.",
    ),
    ("https://cooking.example.com/bread", "Baking bread", "Flour, water, salt and yeast make a loaf."),
]


def search_then_answer(body, n):
    """Search once; once the tool's result is in the transcript, answer from it."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        return Reply(
            reasoning="I should look this up in the sources. ",
            tool_calls=[("web_search", json.dumps({"query": "moon tides"}))],
        )
    return Reply(
        reasoning="Both sources agree. ", content="The Moon's gravity pulls the oceans into **tides**."
    )


def test_a_real_local_search_fills_the_search_card_and_the_sources_panel(
    live_url, stack_db, new_page, user, page_errors
):
    for url, title, text in DOCUMENTS:
        Document.objects.create(url=url, title=title, text=text)
    with ScriptedModelServer(search_then_answer) as model:
        worker = start_worker(stack_db, model.url)
        try:
            page = new_page()
            log_in(page, live_url, user)
            send(page, live_url, "What causes the tides?")
            turn = Turn.objects.filter(conversation__owner=user).latest("created")
            u = turn.uuid
            expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done", timeout=60_000)

            # What the model read is what the page shows: the tool's own result, parsed the same way.
            call = ToolCall.objects.get(step__turn=turn, name="web_search")
            returned = [r["url"] for r in json.loads(call.result)["results"]]
            assert sorted(returned) == sorted(url for url, _, _ in DOCUMENTS[:2])
            assert json.loads(model.requests[1]["messages"][-1]["content"])["query"] == "moon tides"

            card = page.locator(f"#trace-{u} .tool-web_search")
            expect(card.locator(".tool-sources li")).to_have_count(2)
            expect(card).to_contain_text("Why the sea has tides")
            panel = page.locator(f"#sources-{u}")
            expect(panel).to_be_visible()
            expect(panel.locator("li")).to_have_count(2)
            for url in returned:
                expect(panel.locator(f'a[href="{url}"]')).to_have_count(1)
            expect(panel).not_to_contain_text("Baking bread")

            page.reload()  # rebuilt from the stream or Postgres: the same sources
            expect(page.locator(f"#sources-{u} li")).to_have_count(2)
            expect(page.locator(f"#trace-{u} .tool-web_search .tool-sources li")).to_have_count(2)
            page.screenshot(path="bench/results/screens/search-sources.png")
        finally:
            worker.stop()
    assert not page_errors, page_errors
