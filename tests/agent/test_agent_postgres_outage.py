"""Postgres goes away under a running turn: the worker's writes wait and retry (on fresh connections)
instead of failing the turn, no step is left half written, and the text is whole and shown once.

The outage is real for the worker: its connections go through a loopback proxy the test closes
(connection refused, open connections reset) and reopens; the database itself keeps running, since
the test server is shared."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from scripted_model import Reply, ScriptedModelServer

from agent.client import ModelClient
from chat import recording
from chat import redis as chat_redis
from chat.models import Message, Step, ToolCall, Turn
from chat.tasks import execute_turn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from proxy import FaultProxy  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REASONING = " ".join(f"r{i}," for i in range(60))
ANSWER = " ".join(f"a{i}," for i in range(30))


@pytest.fixture
def postgres_proxy():
    """The default database reached through a FaultProxy (every thread's new connection uses it)."""
    db = connection.settings_dict
    real = db["PORT"] or 5432
    proxy = FaultProxy(int(real), host=db["HOST"] or "127.0.0.1")
    connection.close()
    db["PORT"] = proxy.port
    yield proxy
    if proxy.listener is None:
        proxy.up()
    connection.close()
    db["PORT"] = real
    proxy.close()


def script(body, n):
    if not any(m["role"] == "tool" for m in body["messages"]):
        code = json.dumps({"code": "print(2 + 2)"})
        return Reply(reasoning=REASONING, tool_calls=[("python", code)], piece=6, delay=0.03)
    return Reply(reasoning="It printed 4.", content=ANSWER, piece=6, delay=0.03)


def reasoning_by_step(turn) -> dict[int, str]:
    out: dict[int, list[str]] = {}
    step = None
    for item in chat_redis.turn_stream(turn.uuid).read():
        if item.event.type == "step.started":
            step = item.event.index
        elif item.event.type == "reasoning.delta":
            out.setdefault(step, []).append(item.event.text)
    return {k: "".join(v) for k, v in out.items()}


def test_a_turn_rides_out_a_postgres_outage_with_nothing_lost_or_doubled(
    agent_redis, make_turn, postgres_proxy
):
    turn = make_turn()
    done = threading.Event()

    def run():
        try:
            execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
        finally:
            connection.close()
            done.set()

    with ScriptedModelServer(script) as server:
        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.6)  # mid-thinking of step 0
        postgres_proxy.down()
        time.sleep(3.0)  # longer than the recorder's first retries; shorter than AGENT_DB_RETRY_SECONDS
        assert not done.is_set(), "the turn ended while Postgres was away"
        postgres_proxy.up()
        worker.join(60)
    connection.close()  # the test's own connection went through the proxy too
    turn.refresh_from_db()
    assert turn.status == "done", turn.error
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [(s.index, s.reasoning, bool(s.finished)) for s in steps] == [
        (0, REASONING, True),
        (1, "It printed 4.", True),
    ]
    assert turn.steps == 2
    (call,) = ToolCall.objects.filter(step__turn=turn)
    assert call.status == "done" and call.result.strip() == "4"
    assert Message.objects.get(turn=turn).content == ANSWER
    assert reasoning_by_step(turn) == {0: REASONING, 1: "It printed 4."}


def test_the_recorder_retries_a_write_until_postgres_answers_again(make_turn, postgres_proxy):
    turn = make_turn()
    recorder = recording.TurnRecorder(turn, db_retry_seconds=20)
    postgres_proxy.down()
    connection.close()
    threading.Timer(1.5, postgres_proxy.up).start()
    began = time.monotonic()
    from agent import events as ev

    recorder.record(ev.StepStarted(index=0))  # waits out the outage
    waited = time.monotonic() - began
    assert 1.3 < waited < 10
    assert Step.objects.filter(turn=turn, index=0).count() == 1


def test_the_recorder_gives_up_after_its_retry_budget_with_the_database_error(make_turn, postgres_proxy):
    from django.db import OperationalError

    from agent import events as ev

    turn = make_turn()
    recorder = recording.TurnRecorder(turn, db_retry_seconds=1.0)
    postgres_proxy.down()
    connection.close()
    began = time.monotonic()
    with pytest.raises(OperationalError):
        recorder.record(ev.StepStarted(index=0))
    assert time.monotonic() - began < 3
    postgres_proxy.up()
    connection.close()
    assert not Step.objects.filter(turn=turn).exists()
    assert Turn.objects.get(id=turn.id).status == turn.status
