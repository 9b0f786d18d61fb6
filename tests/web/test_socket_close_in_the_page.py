"""In a real browser: when the server closes the conversation socket with a 4xxx code, the page says why."""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth import get_user_model
from web_helpers import PASSWORD

from chat.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)
# Playwright's sync API runs an event loop in the test thread; the ORM calls here are plain blocking calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# Keeps a handle on each socket the page opens, so the test can speak on the page's own socket.
RECORD_SOCKETS = """
window.__sockets = [];
const Native = window.WebSocket;
window.WebSocket = function (...args) { const ws = new Native(...args); window.__sockets.push(ws); return ws; };
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
"""


def test_a_4400_close_shows_reload_advice_under_the_composer(site, chromium, db_write):
    from playwright.sync_api import expect

    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    conv = Conversation.objects.create(owner=user, title="Closing")
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.add_init_script(RECORD_SOCKETS)
        page.goto(site.url + "/accounts/login/")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(site.url + "/")
        page.goto(f"{site.url}/c/{conv.uuid}/")
        # Polled from here: wait_for_function evaluates a string in the page, which its CSP forbids.
        deadline = time.monotonic() + 30
        while not page.evaluate("window.__sockets.length > 0 && window.__sockets[0].readyState === 1"):
            assert time.monotonic() < deadline, "the page's socket did not open"
            time.sleep(0.1)
        page.evaluate("window.__sockets[0].send(JSON.stringify({action: 'dance'}))")
        error = page.locator("#composer-error")
        expect(error).to_be_visible()
        expect(error).to_have_text("This page is out of date: reload it.")
    finally:
        context.close()
