"""Turns in a real Celery worker (a subprocess), with real Redis and Postgres: ordered events,
duplicate deliveries, and a worker SIGKILLed mid-turn whose turn a fresh worker finishes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from scripted_model import Reply, ScriptedModelServer

from chat import redis as chat_redis
from chat.models import Message, Step, ToolCall, Turn
from kimiweb.celery import app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


def steps_done(body):
    msgs = body["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return sum(1 for m in msgs[last_user:] if m["role"] == "assistant")


def four_step_script(body, n):
    """Three steps that each run real Python, slowly enough to be caught mid-stream, then an answer."""
    done = steps_done(body)
    if done < STEPS - 1:
        code = json.dumps({"code": f"print({done} ** 2)"})
        return Reply(
            reasoning=f"Step {done}: " + "pondering " * 12, tool_calls=[("python", code)], piece=6, delay=0.03
        )
    return Reply(reasoning="Enough.", content="Squares: 0, 1, 4.")


class Worker:
    """`celery -A kimiweb worker -Q agent` as a subprocess in its own process group."""

    def __init__(self, llm_url, name):
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "KIMIWEB_NAMESPACE": settings.KIMIWEB_NAMESPACE,  # this run's queue, streams and groups
            "LLM_BASE_URL": llm_url,
            "AGENT_LEASE_SECONDS": "3",
            "DB_CONN_MAX_AGE": "0",
        }
        env.pop("CELERY_BROKER_URL", None)
        env.pop("CELERY_RESULT_BACKEND", None)
        self.log = open(f"/tmp/agent-test-{name}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kimiweb",
                "worker",
                "-Q",
                "agent",
                "-c",
                "2",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self):
        """SIGKILL the whole worker: the main process and its pool children, with no chance to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def workers():
    started = []
    yield started
    for worker in started:
        worker.kill()


def send_run_turn(turn_id):
    """By the registered name, as tasks queued by an earlier release arrive."""
    app.send_task("agent.tasks.run_turn", args=[turn_id], queue="agent")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events_of(redis, turn):
    return [json.loads(f[b"e"]) for _, f in redis.xrange(chat_redis.keys().stream(turn.uuid))]


def turn_status(turn):
    return Turn.objects.filter(id=turn.id).values_list("status", flat=True).get()


def assert_each_character_once(events, turn):
    """The stream's deltas of each step add up to exactly its text in Postgres: nothing shown twice."""
    by_step: dict[int, list[str]] = {}
    step = None
    for e in events:
        if e["type"] == "step.started":
            step = e["index"]
        elif e["type"] == "reasoning.delta":
            by_step.setdefault(step, []).append(e["text"])
    for row in Step.objects.filter(turn=turn):
        assert "".join(by_step.get(row.index, [])) == row.reasoning, f"step {row.index}"


def assert_complete_trace(turn):
    turn.refresh_from_db()
    assert turn.status == "done" and turn.steps == STEPS
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [s.index for s in steps] == list(range(STEPS)) and all(s.finished for s in steps)
    assert all(s.reasoning for s in steps)
    calls = list(ToolCall.objects.filter(step__turn=turn).order_by("step__index"))
    assert [c.result.strip() for c in calls] == ["0", "1", "4"] and {c.status for c in calls} == {"done"}
    assert Message.objects.get(turn=turn).content == "Squares: 0, 1, 4."


def test_a_turn_runs_in_a_real_worker_with_ordered_contiguous_events_and_duplicates_do_not_double_run(
    agent_redis, make_turn, workers
):
    turn = make_turn()
    with ScriptedModelServer(four_step_script) as server:
        workers.append(Worker(server.url, "agent-a"))
        send_run_turn(turn.id)
        send_run_turn(turn.id)  # a duplicate delivery, picked up by the worker's second process
        wait_for(lambda: turn_status(turn) == "done", 90, "the turn to finish")
        time.sleep(4.5)  # the duplicate looks again after the 3 s lease, finds the turn done
        assert len(server.requests) == STEPS, "each step was asked of the model exactly once"
    assert_complete_trace(turn)
    events = events_of(agent_redis, turn)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["index"] for e in events if e["type"] == "step.started"] == list(range(STEPS))
    assert [e["type"] for e in events].count("turn.finished") == 1


def test_a_worker_killed_mid_turn_is_resumed_by_a_fresh_worker_and_nothing_is_lost(
    agent_redis, make_turn, workers
):
    turn = make_turn()
    with ScriptedModelServer(four_step_script) as server:
        first = Worker(server.url, "agent-b1")
        workers.append(first)
        send_run_turn(turn.id)

        def step_two_streaming():
            started = [e for e in events_of(agent_redis, turn) if e["type"] == "step.started"]
            return any(e["index"] == 2 for e in started)

        wait_for(step_two_streaming, 90, "step 2 to start")
        first.kill()
        assert turn_status(turn) == "running"
        workers.append(Worker(server.url, "agent-b2"))
        wait_for(lambda: turn_status(turn) == "done", 90, "the fresh worker to finish the turn")
    assert_complete_trace(turn)
    events = events_of(agent_redis, turn)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq continues across the restart"
    started = [e["index"] for e in events if e["type"] == "step.started"]
    assert started == [0, 1, 2, 3], "step 2 was cut off and continued; no step ran twice"
    assert assert_each_character_once(events, turn) is None
    assert events[-1]["type"] == "turn.finished" and events[-1]["status"] == "done"
