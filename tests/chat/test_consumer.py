"""The conversation socket against real Redis (stream + channel layer) and Postgres: owner-only,
exactly-once in-order delivery across reconnects, and the composer's actions."""

from __future__ import annotations

import asyncio
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from chat_fixtures import make_conversation, make_finished_turn
from django.conf import settings
from django.test import Client, override_settings

from agent.events import (
    ContentDelta,
    ReasoningDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnStarted,
)
from agent.stream import cancel_requested, live_message
from chat import redis as chat_redis
from chat.models import Message, Turn
from kimiweb.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_consumer_connections")]


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def connect(conv, user=None, origin=b"http://testserver"):
    headers = [(b"origin", origin)]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    comm = WebsocketCommunicator(application, f"/ws/conversations/{conv.uuid}/", headers=headers)
    connected, code = await comm.connect()
    return comm, connected, code


async def read_until(comm, predicate, timeout=5.0) -> str:
    """Concatenate frames until `predicate(text)` holds."""
    text = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate(text):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out; got {text[-2000:]!r}")
        text += await comm.receive_from(timeout=remaining)
    return text


async def drain(comm, quiet=0.3) -> str:
    """Everything sent until the socket is quiet (a receive timeout would cancel the app)."""
    text = ""
    while not await comm.receive_nothing(timeout=quiet):
        text += await comm.receive_from()
    return text


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def running_turn(alice):
    conv = make_conversation(alice)
    message = Message.objects.create(conversation=conv, role="user", content="Explain tides")
    return Turn.objects.create(conversation=conv, user_message=message, status="running", thinking=True)


async def test_only_the_owner_can_open_the_socket(running_turn, make_user):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    bob = await database_sync_to_async(make_user)("bob")
    comm, connected, code = await connect(conv, None)
    assert not connected and code == 4404
    await comm.disconnect()  # a refused socket's consumer still listens on the layer until the client goes
    comm, connected, code = await connect(conv, bob)
    assert not connected and code == 4404
    await comm.disconnect()
    comm, connected, _ = await connect(
        conv, await database_sync_to_async(lambda: conv.owner)(), origin=b"http://evil.example"
    )
    assert not connected  # the origin check
    await comm.disconnect()
    comm, connected, _ = await connect(conv, await database_sync_to_async(lambda: conv.owner)())
    assert connected
    await comm.disconnect()


async def test_thinking_is_appended_as_fragments_and_the_answer_rendered_as_markdown(
    running_turn, alice, publisher
):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    u = running_turn.uuid
    comm, connected, _ = await connect(conv, alice)
    assert connected
    await comm.send_json_to({"action": "resume", "turn": str(u), "after": 0})
    pub = await database_sync_to_async(publisher)(running_turn)
    await pub.aemit(TurnStarted(thinking=True))
    await pub.aemit(ReasoningDelta(text="Tides come from <the Moon>. "))
    text = await read_until(comm, lambda t: "the Moon" in t)
    assert f'hx-swap-oob="beforeend:#trace-{u}"' in text  # a new thinking segment
    assert "&lt;the Moon&gt;" in text  # escaped, never markup
    await pub.aemit(ReasoningDelta(text="And the Sun."))
    text = await read_until(comm, lambda t: "And the Sun." in t)
    assert f'<div hx-swap-oob="beforeend:#seg-{u}-1">And the Sun.</div>' in text  # appended, not re-rendered
    await pub.aemit(ContentDelta(text="Mostly **the Moon**."))
    text = await read_until(comm, lambda t: "<strong>the Moon</strong>" in t)
    assert f'<div id="answer-{u}" hx-swap-oob="innerHTML">' in text
    assert 'data-collapse="1"' in text and "Thought for" in text
    await pub.aemit(TurnFinished(status="done", content="Mostly **the Moon**."))
    text = await read_until(comm, lambda t: 'data-status="done"' in t)
    assert f'id="seq-{u}" data-seq="5"' in text
    await comm.disconnect()


async def test_reload_mid_stream_replays_everything_seen_so_far_then_continues_live(
    running_turn, alice, publisher
):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    pub = await database_sync_to_async(publisher)(running_turn)
    await pub.aemit(TurnStarted())
    for i in range(50):
        await pub.aemit(ReasoningDelta(text=f"r{i} "))
    await pub.aemit(ToolCallStarted(call_id="functions.web_search:0", name="web_search"))
    await pub.aemit(
        ToolCallFinished(
            call_id="functions.web_search:0",
            name="web_search",
            arguments='{"query": "tides"}',
            result='[{"title": "Tide - Wikipedia", "url": "https://en.wikipedia.org/wiki/Tide"}]',
            duration_ms=420,
        )
    )
    # A fresh page shows the running turn empty (seq 0) and asks for everything.
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(running_turn.uuid), "after": 0})
    text = await read_until(comm, lambda t: "Tide - Wikipedia" in t, timeout=1.0)
    assert "".join(f"r{i} " for i in range(50)) in text  # all 50 deltas, in order, in one append
    assert "0.4 s" in text
    await pub.aemit(ReasoningDelta(text="after-reload"))
    text += await read_until(comm, lambda t: "after-reload" in t)
    await pub.aemit(TurnFinished(status="done", content="done"))
    text += await read_until(comm, lambda t: 'data-status="done"' in t)
    for i in range(50):
        assert text.count(f"r{i} ") == 1
    await comm.disconnect()


async def test_reconnect_resumes_after_the_last_seq_without_duplicates(running_turn, alice, publisher):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    pub = await database_sync_to_async(publisher)(running_turn)
    for i in range(1, 6):
        await pub.aemit(ReasoningDelta(text=f"<{i}>"))
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(running_turn.uuid), "after": 3})
    text = await read_until(comm, lambda t: "&lt;5&gt;" in t)
    assert "&lt;3&gt;" not in text and "&lt;4&gt;&lt;5&gt;" in text
    # The client already has segment 1, so the rest is appended to it rather than starting a new one.
    assert f"beforeend:#seg-{running_turn.uuid}-1" in text
    await comm.disconnect()


async def test_duplicate_and_out_of_order_live_events_are_dropped_or_filled_from_the_stream(
    running_turn, alice, publisher
):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    pub = await database_sync_to_async(publisher)(running_turn)
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(running_turn.uuid), "after": 0})
    await drain(comm, 0.2)
    first = await pub.aemit(ReasoningDelta(text="[one]"))
    await read_until(comm, lambda t: "[one]" in t)
    # The channel layer delivers seq 1 again: dropped.
    from channels.layers import get_channel_layer

    await get_channel_layer().group_send(pub.group, live_message([first]))
    # Seq 2 reaches the stream but its group message is lost; seq 3 arrives: 2 is fetched first.
    await pub.aemit(ReasoningDelta(text="[two]"), to_group=False)
    await pub.aemit(ReasoningDelta(text="[three]"))
    text = await read_until(comm, lambda t: "[three]" in t)
    text += await drain(comm, 0.2)
    assert "[one]" not in text
    assert text.index("[two]") < text.index("[three]")
    await comm.disconnect()


async def test_when_the_stream_is_gone_the_turn_is_rebuilt_from_postgres(alice):
    conv = await database_sync_to_async(make_conversation)(alice)
    turn = await database_sync_to_async(make_finished_turn)(conv, answer="From **Postgres**")
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(turn.uuid), "after": 7})
    text = await read_until(comm, lambda t: "From <strong>Postgres</strong>" in t)
    assert f'<article class="turn" id="turn-{turn.uuid}"' in text and "Adding two and two." in text
    await comm.disconnect()


async def test_send_creates_the_turn_shows_the_question_and_remembers_the_toggle(alice):
    conv = await database_sync_to_async(make_conversation)(alice)
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume"})
    await comm.send_json_to({"action": "send", "text": "Why is the sky <b>blue</b>?", "thinking": False})
    text = await read_until(comm, lambda t: "sky" in t)
    assert 'hx-swap-oob="beforeend:#thread"' in text
    assert "Why is the sky &lt;b&gt;blue&lt;/b&gt;?" in text
    turn = await database_sync_to_async(
        lambda: Turn.objects.select_related("user_message").get(conversation=conv)
    )()
    assert turn.status == "queued" and turn.thinking is False
    assert f'id="status-{turn.uuid}" data-status="queued"' in text
    pref = await database_sync_to_async(lambda: alice.preference)()
    assert pref.long_thinking is False
    # A second message while one is running is refused with a clear message.
    await comm.send_json_to({"action": "send", "text": "and again", "thinking": True})
    text = await read_until(comm, lambda t: "composer-error" in t)
    assert "still being written" in text
    await comm.disconnect()


async def test_send_rejects_too_long_messages_and_rate_limits(alice):
    conv = await database_sync_to_async(make_conversation)(alice)
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume"})
    with override_settings(CHAT_MAX_MESSAGE_CHARS=5):
        await comm.send_json_to({"action": "send", "text": "too long!", "thinking": True})
        text = await read_until(comm, lambda t: "limit" in t)
    assert "the limit is 5" in text
    with override_settings(CHAT_TURNS_PER_MINUTE=0):
        await comm.send_json_to({"action": "send", "text": "hello", "thinking": True})
        text = await read_until(comm, lambda t: "composer-error" in t and "minute" in t)
    assert "wait a moment" in text
    assert not await database_sync_to_async(lambda: Turn.objects.filter(conversation=conv).exists())()
    await comm.disconnect()


async def test_stop_raises_the_cancel_flag_of_the_running_turn(running_turn, alice):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(running_turn.uuid), "after": 0})
    await comm.send_json_to({"action": "stop"})
    await drain(comm, 0.3)
    assert cancel_requested(chat_redis.sync_client(), chat_redis.keys(), running_turn.uuid)
    chat_redis.sync_client().delete(chat_redis.keys().cancel(running_turn.uuid))
    await comm.disconnect()


async def test_stop_on_a_turn_no_worker_claimed_cancels_it_at_once(alice, publisher):
    conv = await database_sync_to_async(make_conversation)(alice)
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume"})
    await comm.send_json_to({"action": "send", "text": "hello", "thinking": True})
    await read_until(comm, lambda t: "hello" in t)
    await comm.send_json_to({"action": "stop"})
    text = await read_until(comm, lambda t: 'data-status="cancelled"' in t)
    assert "Stopped" in text
    turn = await database_sync_to_async(Turn.objects.get)(conversation=conv)
    assert turn.status == "cancelled"
    await database_sync_to_async(publisher)(turn)  # cleans its stream up
    await comm.disconnect()


async def test_a_second_tab_sees_a_turn_started_in_the_first(alice):
    conv = await database_sync_to_async(make_conversation)(alice)
    tab1, _, _ = await connect(conv, alice)
    tab2, _, _ = await connect(conv, alice)
    for tab in (tab1, tab2):
        await tab.send_json_to({"action": "resume"})
    await tab1.send_json_to({"action": "send", "text": "from tab one", "thinking": True})
    text = await read_until(tab2, lambda t: "from tab one" in t)
    assert re.search(r'id="status-[0-9a-f-]+" data-status="queued"', text)
    for tab in (tab1, tab2):
        await tab.disconnect()


async def test_a_failed_turn_shows_the_workers_error_calmly(running_turn, alice, publisher):
    conv = await database_sync_to_async(lambda: running_turn.conversation)()
    pub = await database_sync_to_async(publisher)(running_turn)
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(running_turn.uuid), "after": 0})
    await pub.aemit(TurnStarted())
    await pub.aemit(
        TurnFinished(status="failed", error="The model server is not answering; try again shortly.")
    )
    text = await read_until(comm, lambda t: 'data-status="failed"' in t)
    assert f'<div class="turn-error" id="err-{running_turn.uuid}" role="alert">' in text
    assert "The model server is not answering; try again shortly." in text
    await comm.disconnect()


async def test_a_stream_trimmed_by_its_length_cap_is_rebuilt_from_postgres(alice, publisher):
    conv = await database_sync_to_async(make_conversation)(alice)
    turn = await database_sync_to_async(make_finished_turn)(conv, answer="Checkpointed **answer**")
    await database_sync_to_async(Turn.objects.filter(pk=turn.pk).update)(status="running")
    pub = await database_sync_to_async(publisher)(turn)
    for i in range(5):
        await pub.aemit(ReasoningDelta(text=f"d{i}"), to_group=False)
    pub.redis.xtrim(pub.stream.key, minid="3-0", approximate=False)  # what XADD MAXLEN does to long turns
    comm, _, _ = await connect(conv, alice)
    await comm.send_json_to({"action": "resume", "turn": str(turn.uuid), "after": 0})
    text = await read_until(comm, lambda t: "Checkpointed <strong>answer</strong>" in t)
    assert f'<article class="turn" id="turn-{turn.uuid}"' in text
    await pub.aemit(ReasoningDelta(text="live-after"))
    text = await read_until(comm, lambda t: "live-after" in t)
    assert 'data-seq="6"' in text
    await comm.disconnect()
