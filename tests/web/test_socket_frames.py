"""The conversation socket against the live Daphne, over a real WebSocket (the `websockets` client).

The origin must be this site's scheme, host and port; a frame the server cannot read gets an error
frame and the socket stays open; a well-formed message the server does not speak closes it with a
4xxx code the page
explains (Daphne sends no close reason; static/chat/chat.js names the codes).
"""

from __future__ import annotations

import contextlib

import pytest
from django.contrib.auth import get_user_model
from web_helpers import PASSWORD, log_in
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from chat.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def socket_to(site, browser_like, db_write):
    """A function opening ada's conversation socket with a given Origin (her session cookie sent)."""
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    conv = Conversation.objects.create(owner=user, title="Sockets")
    client = browser_like()
    assert log_in(client, "ada").status_code == 302
    cookie = f"sessionid={client.cookies['sessionid']}"
    with contextlib.ExitStack() as sockets:

        def open_socket(origin=site.url):
            return sockets.enter_context(
                connect(
                    f"ws://127.0.0.1:{site.port}/ws/conversations/{conv.uuid}/",
                    origin=origin,
                    additional_headers={"Cookie": cookie},
                    open_timeout=10,
                )
            )

        yield open_socket


def test_the_sites_own_origin_connects(socket_to):
    ws = socket_to()
    ws.send('{"action": "resume"}')
    ws.send('{"action": "send", "text": ""}')
    assert "Write a message first." in ws.recv(timeout=10)


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:9999", "https://127.0.0.1:{port}", "http://localhost:{port}", "http://evil.example"],
)
def test_an_origin_differing_in_scheme_host_or_port_is_refused(site, socket_to, origin):
    with pytest.raises(InvalidStatus) as refused:
        socket_to(origin.format(port=site.port))
    assert refused.value.response.status_code == 403


BAD_FRAMES = {
    "not JSON": ("{", "not valid JSON text"),
    "a lone surrogate": ('"\\ud800"', "not valid JSON text"),
    "a lone surrogate in a message": ('{"action": "send", "text": "a\\ud800b"}', "not valid JSON text"),
    "JSON nested 60k deep": ("[" * 60_000 + "]" * 60_000, "not valid JSON text"),
    "JSON that is not an object": ("[1, 2, 3]", "not a JSON object"),
    "a binary frame": (b"\x00\xff binary", "not binary ones"),
}


@pytest.mark.parametrize("frame,complaint", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_an_unreadable_frame_gets_an_error_frame_and_the_socket_stays_open(socket_to, frame, complaint):
    ws = socket_to()
    ws.send(frame)
    reply = ws.recv(timeout=10)
    assert 'id="composer-error"' in reply and complaint in reply
    ws.send('{"action": "send", "text": ""}')  # still open, still answering
    assert "Write a message first." in ws.recv(timeout=10)


def test_every_bad_frame_in_a_row_leaves_the_socket_open(socket_to):
    ws = socket_to()
    for frame, complaint in BAD_FRAMES.values():
        ws.send(frame)
        assert complaint in ws.recv(timeout=10)
    ws.ping().wait(timeout=10)


def test_a_message_the_server_does_not_speak_closes_with_a_4xxx_code(socket_to):
    ws = socket_to()
    ws.send('{"action": "dance"}')
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4400  # static/chat/chat.js shows "This page is out of date: reload it."


@pytest.mark.parametrize("path", ["/ws/conversations/%00/", "/ws/conversations/not-a-uuid/", "/ws/nowhere/"])
def test_a_socket_path_nothing_serves_is_refused_not_a_500(site, path):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{site.port}{path}", origin=site.url, open_timeout=10)
    assert refused.value.response.status_code == 403
    assert "No route found" not in site.log()
