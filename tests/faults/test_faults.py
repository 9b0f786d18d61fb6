"""Break the running stack on purpose, mid-turn, and check what the user keeps: (a) every word a socket
received is in Postgres, (b) no word shows twice on the rebuilt page, (c) a status line within 5 s of
the fault where the fault is one the page can name, (d) the turn's end state, (e) every process back
and /healthz 200, (f) nothing of the stack left after Ctrl-C. Real processes on loopback ports."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import psutil
import pytest
from django.db import connection
from django.test import Client
from harness import (
    FaultStack,
    Watcher,
    alive,
    assert_no_duplicates,
    assert_nothing_received_is_lost,
    tokens,
    wait_dead,
)
from model_server import ANSWER, REASONING

from agent.client import WAITING
from agent.events import ReasoningDelta, StepStarted
from chat import redis as chat_redis
from chat.models import Conversation, Step, Turn
from chat.tasks import RESUMING

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(tmp_path):
    made = []

    def start(**kw) -> FaultStack:
        made.append(FaultStack(tmp_path, **kw))
        made[-1].wait_healthy()
        made[-1].wait_worker_ready()
        return made[-1]

    yield start
    for s in made:
        s.close()


@pytest.fixture
def chat(make_user):
    """A signed-in user's session cookie and a new conversation of theirs."""
    user = make_user("fault-user")
    client = Client()
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    return client.cookies["sessionid"].value, conversation


def start_turn(s: FaultStack, chat) -> tuple[Watcher, Turn]:
    cookie, conversation = chat
    watcher = Watcher(s.base_url, conversation.uuid, cookie)
    watcher.open()
    watcher.send("Count for me, slowly.")
    deadline = time.monotonic() + 30
    while not (turn := Turn.objects.filter(conversation=conversation).first()):
        assert time.monotonic() < deadline, "no turn was created"
        time.sleep(0.1)
    watcher.turn = str(turn.uuid)
    watcher.wait_for(r"\br12,", timeout=60)  # the thinking streams
    return watcher, turn


def wait_turn_over(turn: Turn, timeout: float = 120) -> Turn:
    deadline = time.monotonic() + timeout
    while True:
        turn.refresh_from_db()
        if turn.status in ("done", "failed", "cancelled"):
            return turn
        assert time.monotonic() < deadline, f"turn still {turn.status}"
        time.sleep(0.2)


def page(s: FaultStack, chat) -> str:
    cookie, conversation = chat
    return httpx.get(f"{s.base_url}/c/{conversation.uuid}/", cookies={"sessionid": cookie}).text


def assert_stack_back_and_ctrl_c_clean(s: FaultStack) -> None:
    s.wait_healthy(timeout=30)  # (e)
    for name in ("web", "worker", "inference"):
        assert alive([s.pid(name)]), f"{name} is not running"
    everything = s.all_pids()
    assert s.ctrl_c() == 0
    survivors = wait_dead(everything)  # (f)
    assert not survivors, f"left after Ctrl-C: {survivors}"


def test_daphne_sigkill_is_restarted_alone_and_the_page_resumes_without_loss_or_duplicates(stack, chat):
    s = stack()
    watcher, turn = start_turn(s, chat)
    worker, inference = s.pid("worker"), s.pid("inference")
    os.kill(s.pid("web"), signal.SIGKILL)
    s.wait_for(r"web started \(pid \d+\)", count=2, timeout=30)
    watcher.closed.wait(10)
    watcher.open(timeout=60)  # as the page's socket does: reconnect, resume after the last seq
    turn = wait_turn_over(turn)
    assert turn.status == "done"  # (d)
    assert (s.pid("worker"), s.pid("inference")) == (worker, inference), "only web restarts"
    watcher.wait_for(r'data-status="done"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a)
    html = page(s, chat)
    assert_no_duplicates(html, turn.uuid)  # (b)
    assert turn.answer.content.strip() == ANSWER
    watcher.close()
    assert_stack_back_and_ctrl_c_clean(s)


def test_celery_main_sigkill_restarts_the_worker_without_orphans_and_the_turn_finishes(stack, chat):
    s = stack()
    watcher, turn = start_turn(s, chat)
    main = s.pid("worker")
    pool = [p.pid for p in psutil.Process(main).children(recursive=True)]
    assert pool, "the worker has pool children"
    os.kill(main, signal.SIGKILL)
    assert wait_dead(pool) == [], "the dead main process's pool and beat are gone with it"
    s.wait_for(r"worker started \(pid \d+\)", count=2, timeout=30)
    turn = wait_turn_over(turn, timeout=150)  # the restarted beat sweeps the lapsed lease
    assert turn.status == "done"  # (d)
    watcher.wait_for(r'data-status="done"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a)
    assert_no_duplicates(page(s, chat), turn.uuid)  # (b)
    watcher.close()
    assert_stack_back_and_ctrl_c_clean(s)


def test_inference_sigkill_restarted_the_turn_says_it_waits_and_finishes_whole(stack, chat):
    s = stack()
    watcher, turn = start_turn(s, chat)
    killed_at = time.monotonic()
    os.kill(s.pid("inference"), signal.SIGKILL)
    s.wait_for(r"inference started \(pid \d+\)", count=2, timeout=30)
    turn = wait_turn_over(turn)
    assert turn.status == "done"  # (d)
    said = watcher.first_after(WAITING, killed_at)
    assert said is not None and said - killed_at < 5  # (c)
    watcher.wait_for(r'data-status="done"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a)
    assert_no_duplicates(page(s, chat), turn.uuid)  # (b)
    assert turn.step_rows.get().reasoning.strip() == REASONING.strip()  # resumed, not regenerated twice
    assert turn.answer.content.strip() == ANSWER
    watcher.close()
    assert_stack_back_and_ctrl_c_clean(s)


def test_inference_gone_for_good_fails_the_turn_readably_keeping_its_partial_text(stack, chat):
    s = stack(LLM_RETRY_SECONDS="3")
    watcher, turn = start_turn(s, chat)
    killed_at = time.monotonic()
    s.block_restart("inference")
    os.kill(s.pid("inference"), signal.SIGKILL)
    turn = wait_turn_over(turn, timeout=60)
    assert turn.status == "failed"  # (d)
    assert "model server" in turn.error
    said = watcher.first_after(WAITING, killed_at)
    assert said is not None and said - killed_at < 5  # (c)
    watcher.wait_for(r'data-status="failed"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a): the partial thinking is kept
    assert turn.step_rows.first().reasoning.strip(), "the partial thinking is in Postgres"
    html = page(s, chat)
    assert_no_duplicates(html, turn.uuid)  # (b)
    assert "model server" in html
    watcher.close()


def test_ctrl_c_leaves_no_process_of_the_stack(stack):
    s = stack()
    everything = s.all_pids()
    assert len(everything) >= 5  # supervisor, web, worker main + pool/beat, inference
    assert s.ctrl_c() == 0
    assert wait_dead(everything) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.base_url}/healthz", timeout=2)


def test_redis_sigkill_and_restart_mid_turn_the_turn_finishes_and_nothing_seen_is_lost(stack, chat):
    s = stack(programs=("redis", "web", "worker", "inference"))
    watcher, turn = start_turn(s, chat)
    os.kill(s.pid("redis"), signal.SIGKILL)
    s.wait_for(r"redis started \(pid \d+\)", count=2, timeout=30)  # back, empty
    turn = wait_turn_over(turn, timeout=150)
    assert turn.status == "done"  # (d)
    received = watcher.received()
    watcher.close()
    assert_nothing_received_is_lost(received, turn)  # (a)
    assert_no_duplicates(page(s, chat), turn.uuid)  # (b)
    assert turn.answer.content.strip() == ANSWER
    reopened = Watcher(s.base_url, chat[1].uuid, chat[0])  # a reload after the outage
    reopened.turn = str(turn.uuid)
    reopened.open()
    reopened.wait_for(r'data-status="done"', timeout=30)
    # The stack works on the new, empty Redis: the next message is answered. (Celery's main process
    # dies of the lost broker - kombu's "Unrecoverable error" - once its task ends; the supervisor
    # starts it again.)
    reopened.send("And once more.")
    deadline = time.monotonic() + 120
    while Turn.objects.filter(conversation=chat[1], status="done").count() < 2:
        assert time.monotonic() < deadline, f"the turn after the outage did not finish:\n{s.text()[-3000:]}"
        time.sleep(0.2)
    reopened.close()
    assert_stack_back_and_ctrl_c_clean(s)


def test_worker_pool_child_sigkill_mid_thinking_the_step_is_continued_each_character_once(stack, chat):
    s = stack()
    watcher, turn = start_turn(s, chat)
    time.sleep(1.3)  # thinking for over a second (the whole thinking takes ~3.6 s)
    turn.refresh_from_db()
    # The pool child that runs the turn: the busy one (the other pool child and beat are idle).
    children = psutil.Process(s.pid("worker")).children()
    busy = max(children, key=lambda p: p.cpu_times().user + p.cpu_times().system)
    os.kill(busy.pid, signal.SIGKILL)
    killed = time.monotonic()
    # A checkpoint trails what was published by at most a second: what the page had a second before
    # the kill is in Postgres (and the rest is in the stream, which the resume writes back).
    early = "".join(frame for at, frame in watcher.frames if at <= killed - 1.0)
    step = Step.objects.get(turn=turn, index=0)
    assert step.finished is None, "the kill came after the step (make the model slower)"
    missing = set(tokens(early)) - set(tokens(step.reasoning))
    assert tokens(early) and not missing, f"seen before the kill, not checkpointed: {sorted(missing)[:20]}"
    # (c) the page hears of the restart within 5 s of the kill: the task is redelivered at once and
    # takes the turn over when the lease (AGENT_LEASE_SECONDS, 4 s from the last renewal) lapses.
    watcher.wait_for(RESUMING, timeout=15)
    resumed_after = watcher.first_after(RESUMING, killed) - killed
    assert resumed_after < 5.0, f"the page heard of the restart {resumed_after:.1f} s after the kill"
    turn = wait_turn_over(turn, timeout=150)
    assert turn.status == "done"  # (d)
    watcher.wait_for(r'data-status="done"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a)
    assert_no_duplicates(page(s, chat), turn.uuid)  # (b)
    # The continued step is the uninterrupted run's step, and the stream shows each character once.
    assert list(turn.step_rows.values_list("index", "reasoning")) == [(0, REASONING)]
    assert turn.answer.content.strip() == ANSWER
    events = [e.event for e in chat_redis.turn_stream(turn.uuid).read()]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == REASONING
    assert [e.index for e in events if isinstance(e, StepStarted)] == [0]
    watcher.close()
    assert_stack_back_and_ctrl_c_clean(s)
    print(f"resume notice {resumed_after:.1f} s after the kill")


def terminate_other_backends() -> int:
    """pg_terminate_backend on every connection to this run's database but the test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_postgres_terminating_the_workers_connections_mid_turn_loses_nothing(stack, chat):
    s = stack()
    watcher, turn = start_turn(s, chat)
    terminated = terminate_other_backends()  # mid-thinking: the checkpoint and the heartbeat hit it
    time.sleep(1.5)
    terminated += terminate_other_backends()
    assert terminated >= 1, "the worker had no connection to terminate"
    turn = wait_turn_over(turn, timeout=120)
    assert turn.status == "done", turn.error  # (d)
    log = s.text()
    assert re.search(r"unreachable|checkpoint failed", log), "the worker never met the terminated connection"
    watcher.wait_for(r'data-status="done"', timeout=30)
    assert_nothing_received_is_lost(watcher.received(), turn)  # (a)
    assert_no_duplicates(page(s, chat), turn.uuid)  # (b): the web side reconnects too
    assert list(turn.step_rows.values_list("index", "reasoning")) == [(0, REASONING)]
    assert turn.answer.content.strip() == ANSWER
    events = [e.event for e in chat_redis.turn_stream(turn.uuid).read()]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == REASONING
    watcher.close()
    assert_stack_back_and_ctrl_c_clean(s)
