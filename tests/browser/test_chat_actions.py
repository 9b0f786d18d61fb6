"""The chat page's actions in a real browser: sidebar search, rename, share link, edit and resend,
keyboard shortcuts, and a 100,000-character thinking stream that stays fast."""

from __future__ import annotations

import time

import httpx
import pytest
from chat_fixtures import EventPublisher, make_conversation, make_finished_turn
from conftest import log_in
from playwright.sync_api import expect

from agent.events import ContentDelta, ReasoningDelta, TurnFinished, TurnStarted
from chat.models import Message, Turn

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = "bench/results/screens"


def test_sidebar_search_rename_and_share(live_url, new_page, user, page_errors):
    trip = make_conversation(user, title="Trip to Lisbon")
    make_finished_turn(trip, question="Where to eat in Lisbon?", answer="Try *pastéis de nata*.")
    other = make_conversation(user, title="Untitled")
    Message.objects.create(conversation=other, role="user", content="Explain photosynthesis simply")
    page = new_page()
    log_in(page, live_url, user)
    sidebar = page.locator("#conv-list")
    expect(sidebar.locator("li.conv")).to_have_count(2)
    page.fill(".search input[name=q]", "photosynthesis")  # full-text over message content
    expect(sidebar.locator("li.conv")).to_have_count(1)
    expect(sidebar).to_contain_text("Untitled")
    page.fill(".search input[name=q]", "")
    expect(sidebar.locator("li.conv")).to_have_count(2)

    page.goto(f"{live_url}/c/{trip.uuid}/")
    item = sidebar.locator("li.conv.active")
    item.hover()
    item.locator("summary").click()
    page.screenshot(path=f"{SHOTS}/conversation-menu.png")
    item.locator("input[name=title]").fill("Lisbon food")
    item.get_by_role("button", name="Rename").click()
    expect(page.locator(".conv-title")).to_have_text("Lisbon food")

    page.locator("#share summary").click()
    page.get_by_role("button", name="Create link").click()
    share_url = page.locator("#share-url").input_value()
    assert "/s/" in share_url
    page.screenshot(path=f"{SHOTS}/share.png")
    guest = new_page()
    guest.goto(share_url)
    expect(guest.locator(".answer").first).to_contain_text("Try pastéis de nata.")
    expect(guest.locator("#composer")).to_have_count(0)
    page.get_by_role("button", name="Revoke link").click()  # the panel stays open after creating
    assert httpx.get(share_url).status_code == 404
    assert not page_errors, page_errors


def test_edit_and_resend_from_the_page_keeps_the_earlier_version(live_url, new_page, user, page_errors):
    conv = make_conversation(user, title="Typos")
    make_finished_turn(conv, question="Capital of Frnace?", answer="Paris.")
    page = new_page()
    log_in(page, live_url, user)
    page.goto(f"{live_url}/c/{conv.uuid}/")
    page.locator(".msg-user").first.hover()
    page.get_by_role("button", name="Edit message").click()
    box = page.locator(".edit-form textarea")
    box.fill("Capital of France?")
    page.get_by_role("button", name="Save & send").click()
    expect(page.locator(".bubble").first).to_have_text("Capital of France?")
    new_turn = Turn.objects.filter(conversation=conv).latest("created")
    assert new_turn.status == "queued" and new_turn.user_message.content == "Capital of France?"
    earlier = page.locator("details.earlier")
    expect(earlier).to_contain_text("Earlier version (1)")
    earlier.locator("> summary").click()
    expect(earlier).to_contain_text("Capital of Frnace?")
    expect(earlier).to_contain_text("Paris.")
    assert not page_errors, page_errors


def test_keyboard_shortcuts(live_url, new_page, user, page_errors):
    conv = make_conversation(user)
    page = new_page()
    log_in(page, live_url, user)
    page.goto(f"{live_url}/c/{conv.uuid}/")
    page.locator("body").click()
    page.locator("h1").click()
    page.keyboard.press("/")
    expect(page.locator("#composer-text")).to_be_focused()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.locator("#composer-text").input_value() == "line one\nline two"
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(live_url + "/")
    assert not page_errors, page_errors


def test_a_hundred_thousand_characters_of_thinking_stream_without_slowing_the_page(
    live_url, new_page, user, page_errors
):
    page = new_page()
    log_in(page, live_url, user)
    conv = make_conversation(user)
    message = Message.objects.create(conversation=conv, role="user", content="Think for a long time")
    turn = Turn.objects.create(conversation=conv, user_message=message, status="running", thinking=True)
    page.goto(f"{live_url}/c/{conv.uuid}/")
    page.wait_for_function("() => !document.body.classList.contains('offline')")
    time.sleep(0.3)
    pub = EventPublisher(turn)
    pub.emit(TurnStarted())
    chunk = "reasoning about the problem, step by step; " * 2  # 86 characters per delta
    started = time.monotonic()
    for i in range(1200):
        pub.emit(ReasoningDelta(text=f"{chunk}#{i} "))
    expect(page.locator(f"#trace-{turn.uuid}")).to_contain_text("#1199 ", timeout=20_000)
    elapsed = time.monotonic() - started
    length = page.evaluate(f"document.getElementById('trace-{turn.uuid}').textContent.length")
    assert length > 100_000
    # The panel only ever grows by appended text: one segment element, no re-render.
    assert page.locator(f"#trace-{turn.uuid} > .seg").count() == 1
    frame_ms = page.evaluate(
        "() => new Promise(r => { const t = performance.now(); requestAnimationFrame(() => r(performance.now() - t)); })"
    )
    assert frame_ms < 100, frame_ms  # the page still paints promptly
    pub.emit(ContentDelta(text="Done thinking."))
    pub.emit(TurnFinished(status="done", content="Done thinking."))
    expect(page.locator(f"#status-{turn.uuid}")).to_have_attribute("data-status", "done")
    print(f"1,200 deltas, {length:,} characters of thinking delivered and shown in {elapsed:.2f} s")
    pub.drop_stream()
    assert not page_errors, page_errors


def test_a_follow_up_goes_over_the_socket_and_appears_at_once(live_url, new_page, user, page_errors):
    conv = make_conversation(user, title="Follow-ups")
    make_finished_turn(conv, question="First question", answer="First answer.")
    page = new_page()
    log_in(page, live_url, user)
    page.goto(f"{live_url}/c/{conv.uuid}/")
    page.wait_for_function("() => !document.body.classList.contains('offline')")
    page.fill("#composer-text", "And a <b>second</b> one?")
    page.keyboard.press("Enter")
    expect(page.locator(".bubble").last).to_have_text("And a <b>second</b> one?")
    expect(page.locator("#composer-text")).to_have_value("")
    turn = Turn.objects.filter(conversation=conv).latest("created")
    assert turn.user_message.content == "And a <b>second</b> one?" and turn.status == "queued"
    expect(page.locator(f"#status-{turn.uuid}")).to_have_attribute("data-status", "queued")
    expect(page.get_by_role("button", name="Stop generating (Esc)")).to_be_visible()
    # A second message while this one runs gets a clear, calm refusal.
    page.fill("#composer-text", "third")
    page.locator("#composer").evaluate("form => form.requestSubmit()")
    expect(page.locator("#composer-error")).to_contain_text("still being written")
    assert not page_errors, page_errors
