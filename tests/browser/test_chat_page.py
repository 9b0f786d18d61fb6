"""The chat page in a real browser (Chromium) against a live Daphne; turn events come from a publisher
speaking the worker's protocol (Redis stream + Channels group), so no worker or model is needed."""

from __future__ import annotations

import json
import time

import pytest
from chat_fixtures import EventPublisher
from conftest import PASSWORD, log_in
from django.utils import timezone
from playwright.sync_api import expect

from agent.corpus import SearchHit, SearchResults
from agent.events import (
    ContentDelta,
    ReasoningDelta,
    StepFinished,
    StepStarted,
    ToolCallArguments,
    ToolCallFinished,
    ToolCallRunning,
    ToolCallStarted,
    TurnFinished,
    TurnStarted,
)
from agent.stream import cancel_requested
from agent.tools.web_search import fit_results
from chat import redis as chat_redis
from chat.models import Turn

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = "bench/results/screens"


def latest_turn(user) -> Turn:
    return Turn.objects.filter(conversation__owner=user).select_related("conversation").latest("created")


def send_first_message(page, live_url, text, thinking=True):
    page.goto(live_url + "/")
    toggle = page.locator("#thinking-toggle")
    if toggle.is_checked() != thinking:
        page.locator("label.toggle").click()
    page.fill("#composer-text", text)
    page.keyboard.press("Enter")
    page.wait_for_url(live_url + "/c/**")
    expect(page.locator(".turn-foot[data-status=queued]")).to_have_count(1)


def wait_socket_ready(page):
    # The client sends `resume` on open; the server answers with the replay (possibly empty).
    page.wait_for_function("() => !document.body.classList.contains('offline')")
    time.sleep(0.3)


def test_send_with_thinking_streams_thinking_then_answer(live_url, new_page, user, page_errors):
    page = new_page()
    log_in(page, live_url, user)
    send_first_message(page, live_url, "How far is the Moon?")
    turn = latest_turn(user)
    assert turn.thinking is True
    wait_socket_ready(page)
    pub = EventPublisher(turn)
    pub.emit(TurnStarted(thinking=True, model="test"))
    pub.emit(StepStarted(index=0))
    pub.emit(ReasoningDelta(text="The user asks about the Moon. "))
    pub.emit(ReasoningDelta(text="Average distance is about 384,400 km."))
    thinking = page.locator(f"#think-{turn.uuid}")
    expect(thinking.locator(".trace")).to_contain_text("Average distance is about 384,400 km.")
    expect(thinking).to_have_attribute("open", "")
    expect(page.locator(f"#sum-{turn.uuid}")).to_contain_text("Thinking")
    pub.emit(ContentDelta(text="The Moon is about **384,400 km** away"))
    pub.emit(ContentDelta(text=" on average."))
    answer = page.locator(f"#answer-{turn.uuid}")
    expect(answer.locator("strong")).to_have_text("384,400 km")
    expect(answer).to_contain_text("on average.")
    expect(answer).to_have_attribute("aria-busy", "true")  # aria-live waits for the whole answer
    # The thinking panel folds away once the answer starts and says how long it thought.
    expect(thinking).not_to_have_attribute("open", "")
    expect(page.locator(f"#sum-{turn.uuid}")).to_contain_text("Thought for")
    pub.emit(StepFinished(index=0, finish_reason="stop"))
    pub.emit(TurnFinished(status="done", content="The Moon is about **384,400 km** away on average."))
    expect(page.locator(f"#status-{turn.uuid}")).to_have_attribute("data-status", "done")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(page.locator("#live-status")).to_have_text("Answer complete")
    page.screenshot(path=f"{SHOTS}/answer-light.png", full_page=False)
    pub.drop_stream()
    assert not page_errors, page_errors


def claim_like_a_worker(turn: Turn) -> Turn:
    """What chat.recording.claim_turn does: the turn is running under a worker's lease."""
    Turn.objects.filter(pk=turn.pk).update(
        status="running", lease_owner="test-worker", started=timezone.now()
    )
    turn.refresh_from_db()
    return turn


def start_conversation(page, live_url, user, text="Tell me about tides", thinking=True):
    log_in(page, live_url, user)
    send_first_message(page, live_url, text, thinking)
    turn = claim_like_a_worker(latest_turn(user))
    wait_socket_ready(page)
    return turn, EventPublisher(turn)


def test_sign_up_lands_on_a_new_chat(live_url, new_page, db_write, page_errors):
    page = new_page()
    page.goto(live_url + "/accounts/signup/")
    page.fill("input[name=username]", f"newcomer{time.monotonic_ns()}")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_url + "/")
    expect(page.locator("#composer-text")).to_be_visible()
    expect(page.locator("#thinking-toggle")).to_be_checked()
    expect(page.get_by_role("heading", name="What can I help you find out?")).to_be_visible()
    page.screenshot(path=f"{SHOTS}/new-chat.png")
    assert not page_errors, page_errors


def test_tool_cards_appear_where_the_model_called_them(live_url, new_page, user, page_errors):
    page = new_page()
    turn, pub = start_conversation(page, live_url, user, "What is the tallest mountain?")
    u = turn.uuid
    pub.emit(TurnStarted())
    pub.emit(ReasoningDelta(text="I should search for this."))
    pub.emit(ToolCallStarted(call_id="functions.web_search:0", name="web_search"))
    pub.emit(ToolCallArguments(call_id="functions.web_search:0", delta='{"query": "tallest'))
    card = page.locator(f"#tool-{u}-2")
    expect(card).to_contain_text("writing")
    pub.emit(ToolCallArguments(call_id="functions.web_search:0", delta=' mountain"}'))
    pub.emit(
        ToolCallRunning(
            call_id="functions.web_search:0", name="web_search", arguments='{"query": "tallest mountain"}'
        )
    )
    expect(card).to_contain_text("running")
    expect(card).to_contain_text("tallest mountain")
    hits = [
        SearchHit("Mount Everest - Wikipedia", "https://en.wikipedia.org/wiki/Mount_Everest", "8,849 m"),
        SearchHit("Seven Summits", "https://example.org/seven", "list"),
    ]
    pub.emit(
        ToolCallFinished(
            call_id="functions.web_search:0",
            name="web_search",
            arguments='{"query": "tallest mountain"}',
            result=fit_results(SearchResults("tallest mountain", hits), 8000),  # what web_search returns
            duration_ms=1234,
        )
    )
    expect(card).to_contain_text("1.2 s")
    pub.emit(ReasoningDelta(text="Everest it is. Let me compute with Python."))
    code = {"code": "print(8849 * 3.28084)"}
    pub.emit(ToolCallStarted(call_id="functions.python:1", name="python"))
    pub.emit(
        ToolCallFinished(
            call_id="functions.python:1",
            name="python",
            arguments=json.dumps(code),
            result="29031.69\n",
            duration_ms=80,
        )
    )
    pub.emit(ContentDelta(text="Mount Everest, 8,849 m (29,032 ft)."))
    pub.emit(TurnFinished(status="done", content="Mount Everest, 8,849 m (29,032 ft)."))
    expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done")
    # Order in the trace: thinking, search card, thinking, python card.
    order = page.locator(f"#trace-{u} > *").evaluate_all("els => els.map(e => e.id)")
    assert order == [f"seg-{u}-1", f"tool-{u}-2", f"seg-{u}-3", f"tool-{u}-4"]
    page.locator(f"#sum-{u}").click()  # open the folded panel
    card.locator("summary").click()
    link = card.locator("a", has_text="Mount Everest - Wikipedia")
    expect(link).to_have_attribute("href", "https://en.wikipedia.org/wiki/Mount_Everest")
    expect(link).to_have_attribute("rel", "noopener nofollow")
    python_card = page.locator(f"#tool-{u}-4")
    python_card.locator("summary").click()
    expect(python_card.locator(".tool-code")).to_contain_text("print(8849 * 3.28084)")
    expect(python_card.locator(".tool-output")).to_have_text("29031.69\n")
    expect(page.locator(f"#sources-{u}")).to_contain_text("Mount Everest - Wikipedia")
    expect(page.locator(f"#sum-{u}")).to_contain_text("2 tool calls")
    page.screenshot(path=f"{SHOTS}/tool-cards.png")
    pub.drop_stream()
    assert not page_errors, page_errors


def test_stop_mid_stream_keeps_the_partial_output(live_url, new_page, user, page_errors):
    page = new_page()
    turn, pub = start_conversation(page, live_url, user, "Write a long essay")
    u = turn.uuid
    pub.emit(TurnStarted())
    pub.emit(ReasoningDelta(text="Planning the essay."))
    pub.emit(ContentDelta(text="Essays begin with a thesis"))
    expect(page.locator(f"#answer-{u}")).to_contain_text("Essays begin with a thesis")
    stop = page.get_by_role("button", name="Stop generating (Esc)")
    expect(stop).to_be_visible()
    stop.click()
    # The worker sees the cancel flag between deltas, keeps what it has, and finishes as cancelled.
    redis = pub.redis
    deadline = time.monotonic() + 5
    while not cancel_requested(redis, chat_redis.keys(), u):
        assert time.monotonic() < deadline, "the cancel flag was never raised"
        time.sleep(0.05)
    Turn.objects.filter(pk=turn.pk).update(status="cancelled", finished=timezone.now())
    pub.emit(TurnFinished(status="cancelled", content="Essays begin with a thesis"))
    expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "cancelled")
    expect(page.locator(f"#status-{u}")).to_contain_text("Stopped")
    expect(page.locator(f"#answer-{u}")).to_contain_text("Essays begin with a thesis")
    expect(stop).to_be_hidden()
    redis.delete(chat_redis.keys().cancel(u))
    pub.drop_stream()
    assert not page_errors, page_errors


def test_reload_mid_stream_shows_everything_within_a_second_and_continues(
    live_url, new_page, user, page_errors
):
    page = new_page()
    turn, pub = start_conversation(page, live_url, user, "Think hard")
    u = turn.uuid
    pub.emit(TurnStarted())
    for i in range(300):
        pub.emit(ReasoningDelta(text=f"t{i} "), to_group=(i % 7 != 0))  # some live messages lost: no matter
    pub.emit(ToolCallStarted(call_id="functions.browse:0", name="browse"))
    pub.emit(ContentDelta(text="Partial answer so far"))
    expect(page.locator(f"#answer-{u}")).to_contain_text("Partial answer so far")
    page.reload()
    started = time.monotonic()
    expect(page.locator(f"#answer-{u}")).to_contain_text("Partial answer so far", timeout=1000)
    expect(page.locator(f"#trace-{u}")).to_contain_text("t299", timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    pub.emit(ContentDelta(text=" and then more."))
    pub.emit(TurnFinished(status="done", content="Partial answer so far and then more."))
    expect(page.locator(f"#answer-{u}")).to_have_text("Partial answer so far and then more.")
    trace = page.locator(f"#trace-{u}").text_content()  # the folded panel has no innerText
    wrong = {i: trace.count(f"t{i} ") for i in range(300) if trace.count(f"t{i} ") != 1}
    assert not wrong, f"deltas lost or duplicated: {wrong} in {trace[:3000]!r}"
    assert trace.index("t0 ") < trace.index("t150 ") < trace.index("t299")
    pub.drop_stream()
    assert not page_errors, page_errors


def test_dark_mode_follows_the_system_and_the_toggle(live_url, new_page, user, page_errors):
    page = new_page(color_scheme="dark")
    log_in(page, live_url, user)
    bg = "() => getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(bg) == "rgb(22, 23, 26)"  # system preference: dark
    toggle = page.locator("#theme-toggle")
    toggle.click()  # system -> light
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert page.evaluate(bg) == "rgb(255, 255, 255)"
    toggle.click()  # light -> dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.wait_for_timeout(300)  # the preference POST
    page.goto(live_url + "/")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")  # remembered
    turn, pub = None, None
    send_first_message(page, live_url, "Show me some code", thinking=True)
    turn = claim_like_a_worker(latest_turn(user))
    wait_socket_ready(page)
    pub = EventPublisher(turn)
    pub.emit(TurnStarted())
    pub.emit(ReasoningDelta(text="A short example in Python will do."))
    answer = (
        "Here you go:\n\n```python\ndef square(x: int) -> int:\n    return x * x\n```\n\nand $e^{i\\pi}+1=0$."
    )
    pub.emit(ContentDelta(text=answer))
    pub.emit(TurnFinished(status="done", content=answer))
    expect(page.locator(f"#answer-{turn.uuid} .katex")).to_have_count(1)
    assert page.evaluate(bg) == "rgb(22, 23, 26)"
    page.screenshot(path=f"{SHOTS}/dark.png")
    pub.drop_stream()
    assert not page_errors, page_errors


def test_mobile_layout(live_url, new_page, user, page_errors):
    page = new_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    turn, pub = start_conversation(page, live_url, user, "Plan a weekend in Kyoto")
    pub.emit(TurnStarted())
    pub.emit(ReasoningDelta(text="Kyoto: temples, food, walking."))
    pub.emit(ToolCallStarted(call_id="functions.web_search:0", name="web_search"))
    pub.emit(
        ToolCallFinished(
            call_id="functions.web_search:0",
            name="web_search",
            arguments='{"query": "Kyoto weekend itinerary"}',
            result="[]",
            duration_ms=800,
        )
    )
    text = "**Day 1:** Fushimi Inari early, then Gion.\n\n**Day 2:** Arashiyama bamboo grove."
    pub.emit(ContentDelta(text=text))
    pub.emit(TurnFinished(status="done", content=text))
    expect(page.locator(f"#status-{turn.uuid}")).to_have_attribute("data-status", "done")
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()  # off-canvas until asked for
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    page.screenshot(path=f"{SHOTS}/mobile.png")
    page.get_by_role("button", name="Open conversations").click()
    expect(sidebar).to_be_visible()
    page.wait_for_timeout(300)  # the slide-in
    assert sidebar.bounding_box()["x"] >= 0
    page.screenshot(path=f"{SHOTS}/mobile-sidebar.png")
    pub.drop_stream()
    assert not page_errors, page_errors


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_xss_in_a_user_message_or_in_model_output_does_not_execute(live_url, new_page, user, page_errors):
    page = new_page()
    turn, pub = start_conversation(page, live_url, user, "Hi " + XSS)
    u = turn.uuid
    pub.emit(TurnStarted())
    pub.emit(ReasoningDelta(text="thinking " + XSS))
    pub.emit(ToolCallStarted(call_id="functions.browse:0", name="browse"))
    pub.emit(
        ToolCallFinished(
            call_id="functions.browse:0",
            name="browse",
            arguments='{"url": "javascript:window.__xss=5"}',
            result="page " + XSS,
        )
    )
    evil = (
        "Answer " + XSS + ' [click me](javascript:window.__xss=4) <a href="javascript:window.__xss=6">x</a>'
    )
    pub.emit(ContentDelta(text=evil))
    pub.emit(TurnFinished(status="done", content=evil))
    expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done")
    page.locator(f"#sum-{u}").click()
    page.locator(f"#tool-{u}-2 summary").click()
    page.get_by_text("click me").click()
    page.reload()  # and again as rendered from Postgres... (the turn is done; rows come from the worker)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#thread img, #thread script").count() == 0
    expect(page.locator(".bubble").first).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(page.locator(f"#answer-{u}")).to_contain_text("<script>window.__xss=2</script>")
    pub.drop_stream()
    assert not page_errors, page_errors
