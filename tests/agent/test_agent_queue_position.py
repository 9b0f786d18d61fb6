"""A queued turn's status line says how many turns are ahead of it, live, as the queue moves: through
the real socket consumer (channels' communicator on the ASGI app), the real Redis channel layer and
Postgres; the queue moves by the real paths (a queued turn cancelled, a turn taken by execute_turn)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from scripted_model import Reply, ScriptedModelServer

from agent.client import ModelClient
from chat import queue, services
from chat.models import Turn
from chat.tasks import execute_turn
from kimiweb.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def read_until(comm, needle: str, timeout=10.0) -> str:
    text = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in text:
        remaining = deadline - loop.time()
        assert remaining > 0, f"{needle!r} never came; got {text[-1500:]!r}"
        text += await comm.receive_from(timeout=remaining)
    return text


def test_the_notice_counts_the_turns_queued_before(make_turn):
    first, second, third = make_turn(), make_turn(), make_turn()
    assert [ahead for _, _, ahead in queue.positions()] == [0, 1, 2]
    assert queue.notice_for(third) == "Waiting for a free worker — 2 turns ahead of yours"
    assert queue.notice_for(second) == "Waiting for a free worker — 1 turn ahead of yours"
    assert queue.notice_for(first) == "Waiting for a free worker — yours is next"
    first.status = Turn.Status.RUNNING
    assert queue.notice_for(first) == ""


async def test_a_queued_turns_status_line_follows_the_queue_live(make_turn, agent_redis):
    first, second, mine = [await database_sync_to_async(make_turn)() for _ in range(3)]
    user = await database_sync_to_async(lambda: mine.conversation.owner)()
    headers = [
        (b"origin", b"http://testserver"),
        (b"cookie", await database_sync_to_async(session_cookie)(user)),
    ]
    comm = WebsocketCommunicator(application, f"/ws/conversations/{mine.conversation.uuid}/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"action": "resume", "turn": str(mine.uuid), "after": 0})
    await read_until(comm, "2 turns ahead of yours")  # on (re)connect the socket asks

    await database_sync_to_async(services.cancel)(first)  # the queue moves: everyone is told
    await read_until(comm, "1 turn ahead of yours")

    def take_second():
        with ScriptedModelServer([Reply(content="Done.")]) as server:
            execute_turn(second.id, client=ModelClient(server.url, "scripted"))

    await database_sync_to_async(take_second)()  # a worker takes the turn ahead
    await read_until(comm, "yours is next")

    def take_mine():
        with ScriptedModelServer([Reply(content="Mine.")]) as server:
            execute_turn(mine.id, client=ModelClient(server.url, "scripted"))

    await database_sync_to_async(take_mine)()
    text = await read_until(comm, 'data-status="done"')
    last_status = text[text.rfind('id="status-') :]
    assert "ahead of yours" not in last_status and "yours is next" not in last_status
    await comm.disconnect()
    from django.db import connections

    await database_sync_to_async(connections.close_all)()
