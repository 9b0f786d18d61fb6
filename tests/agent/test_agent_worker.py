"""The worker side of a turn, in process: claiming, rows in Postgres, events in Redis and Channels."""

import asyncio
import json
import threading
import time

import pytest
from django.db import connection
from scripted_model import Reply, ScriptedModelServer

from agent.client import ModelClient
from agent.stream import TurnStream, request_cancel
from chat import recording as store
from chat import redis as chat_redis
from chat.models import Message, Step, ToolCall, Turn
from chat.tasks import execute_turn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def steps_done(body):
    """How many steps of this turn the request already contains (the scripted model's position)."""
    msgs = body["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return sum(1 for m in msgs[last_user:] if m["role"] == "assistant")


def stream_events(client, turn):
    return [json.loads(fields[b"e"]) for _, fields in client.xrange(chat_redis.keys().stream(turn.uuid))]


def two_step_script(body, n):
    if steps_done(body) == 0:
        code = json.dumps({"code": "print(6 * 7)"})
        return Reply(reasoning="I should compute.", content="Computing.", tool_calls=[("python", code)])
    return Reply(reasoning="It printed 42.", content="The answer is **42**.")


def test_a_turn_leaves_a_complete_trace_in_postgres_and_every_event_in_the_stream(agent_redis, make_turn):
    turn = make_turn()
    group = chat_redis.keys().group(turn.conversation.uuid)
    layer_messages = []

    async def listen_until_finished(ready):
        from channels.layers import channel_layers

        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        ready.set()
        while True:
            message = await asyncio.wait_for(layer.receive(channel), timeout=30)
            layer_messages.append(message)
            if message["events"][-1]["type"] == "turn.finished":
                break
        await layer.close_pools()

    ready = threading.Event()
    listener = threading.Thread(target=lambda: asyncio.run(listen_until_finished(ready)))
    listener.start()
    ready.wait(10)
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    listener.join(30)

    turn.refresh_from_db()
    assert turn.status == "done" and turn.steps == 2 and turn.finished and turn.error == ""
    assert turn.tokens_in > 0 and turn.tokens_out > 0 and turn.lease_expires is None
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [(s.index, s.finish_reason) for s in steps] == [(0, "tool_calls"), (1, "stop")]
    assert steps[0].reasoning == "I should compute." and steps[0].content == "Computing."
    assert all(s.finished for s in steps) and steps[1].usage["completion_tokens"] > 0
    call = ToolCall.objects.get(step=steps[0])
    assert (call.name, call.call_id, call.status, call.result.strip()) == (
        "python",
        "functions.python:0",
        "done",
        "42",
    )
    assert json.loads(call.arguments) == {"code": "print(6 * 7)"} and call.finished
    answer = Message.objects.get(turn=turn)
    assert answer.role == "assistant" and answer.content == "The answer is **42**."
    assert answer.reasoning == "I should compute.\n\nIt printed 42."

    events = stream_events(agent_redis, turn)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["turn"] for e in events} == {str(turn.uuid)}
    assert events[0]["type"] == "turn.started" and events[-1]["type"] == "turn.finished"
    assert agent_redis.ttl(chat_redis.keys().stream(turn.uuid)) > 0, "the stream expires after the turn"
    assert [e for m in layer_messages for e in m["events"]] == events, (
        "the group got the same events, in order"
    )
    assert {m["type"] for m in layer_messages} == {"turn.events"}


def test_the_model_sees_the_visible_history_and_the_reasoning_of_this_turns_tool_calls(
    agent_redis, make_turn
):
    turn = make_turn("And in French?", history=[("user", "Say hello"), ("assistant", "Hello!")])
    old = Message.objects.create(
        conversation=turn.conversation, role="user", content="an edited-away message"
    )
    old.created = turn.user_message.created.replace(year=2000)
    old.superseded_by = turn.user_message
    old.save()
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    first, second = server.requests
    assert [(m["role"], m["content"]) for m in first["messages"][1:]] == [
        ("user", "Say hello"),
        ("assistant", "Hello!"),
        ("user", "And in French?"),
    ]
    assert first["messages"][0]["role"] == "system"
    assistant = second["messages"][4]
    assert assistant["reasoning_content"] == "I should compute." and assistant["tool_calls"]


def test_a_live_lease_keeps_a_second_worker_out_until_it_expires(agent_redis, make_turn):
    turn = make_turn()
    first = store.claim_turn(turn.id, "worker-a", lease_seconds=30)
    assert first.turn is not None
    second = store.claim_turn(turn.id, "worker-b", lease_seconds=30)
    assert second.turn is None and not second.finished and 29 < second.retry_in <= 31
    Turn.objects.filter(id=turn.id).update(lease_expires=first.turn.lease_expires.replace(year=2000))
    assert store.claim_turn(turn.id, "worker-b", lease_seconds=30).turn is not None, (
        "an expired lease is taken over"
    )
    assert not store.renew_lease(turn.id, "worker-a", 30), "the old holder learns it lost the turn"
    Turn.objects.filter(id=turn.id).update(status="done")
    assert store.claim_turn(turn.id, "worker-c", lease_seconds=30).finished


def test_a_finished_turn_is_not_run_again(agent_redis, make_turn):
    turn = make_turn()
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
        claim = execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    assert claim.finished and len(server.requests) == 2
    assert Step.objects.filter(turn=turn).count() == 2


def test_stop_cancels_mid_stream_and_keeps_the_partial_answer(agent_redis, make_turn):
    turn = make_turn()
    long = Reply(reasoning="thinking " * 20, content="partial " * 200, piece=8, delay=0.01)
    with ScriptedModelServer([long]) as server:
        cancel = (chat_redis.sync_client(), chat_redis.keys(), turn.uuid)
        threading.Timer(0.8, request_cancel, args=cancel).start()
        t0 = time.monotonic()
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
        elapsed = time.monotonic() - t0
    assert elapsed < 5
    turn.refresh_from_db()
    assert turn.status == "cancelled" and turn.finished
    answer = Message.objects.get(turn=turn)
    assert answer.reasoning.startswith("thinking")
    step = Step.objects.get(turn=turn)
    assert step.finish_reason == "cancelled" and step.content == answer.content
    assert stream_events(agent_redis, turn)[-1]["status"] == "cancelled"


def die_during_step_one(client, turn, stream_keeps: int, checkpoint: str) -> list[dict]:
    """Make a finished two-step turn look as if its worker died while step 1 streamed its reasoning:
    the stream keeps step 1's start and its first `stream_keeps` reasoning deltas, the Step row the
    checkpoint `checkpoint`, the turn running under a lapsed lease. Returns the events kept."""
    events = stream_events(client, turn)
    start = next(i for i, e in enumerate(events) if e["type"] == "step.started" and e["index"] == 1)
    keep = start + 1 + stream_keeps
    assert all(e["type"] == "reasoning.delta" for e in events[start + 1 : keep])
    key = chat_redis.keys().stream(turn.uuid)
    client.delete(key)  # a stream whose last entries were never written (XDEL would keep its top id)
    for e in events[:keep]:
        client.xadd(key, {"e": json.dumps(e)}, id=f"{e['seq']}-0")
    Step.objects.filter(turn=turn, index=1).update(finished=None, reasoning=checkpoint, content="")
    Message.objects.filter(turn=turn).delete()
    Turn.objects.filter(id=turn.id).update(status="running", lease_expires=None, finished=None, steps=1)
    return events[:keep]


def step_text(events, index, kind):
    """The text of one step's deltas of `kind` in a stream (every delta once, as the page shows it)."""
    out, inside = [], False
    for e in events:
        if e["type"] == "step.started":
            inside = e["index"] == index
        elif inside and e["type"] == kind:
            out.append(e["text"])
    return "".join(out)


@pytest.mark.parametrize(
    "stream_keeps, checkpoint",
    [(1, "It pr"), (0, "It printed")],
    ids=["stream-ahead-of-checkpoint", "checkpoint-ahead-of-stream"],
)
def test_resume_continues_the_unfinished_step_with_each_character_once(
    agent_redis, make_turn, stream_keeps, checkpoint
):
    turn = make_turn()
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    kept = die_during_step_one(agent_redis, turn, stream_keeps, checkpoint)
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    assert len(server.requests) == 1, "only the unfinished step goes on"
    body = server.requests[0]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    seen = step_text(kept, 1, "reasoning.delta")
    assert body["messages"][-1] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": max(seen, checkpoint, key=len),
    }
    assert body["messages"][-2]["role"] == "tool"
    turn.refresh_from_db()
    assert turn.status == "done" and turn.steps == 2
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [s.index for s in steps] == [0, 1]
    assert (steps[1].reasoning, steps[1].content) == ("It printed 42.", "The answer is **42**.")
    assert Message.objects.get(turn=turn).content == "The answer is **42**."
    events = stream_events(agent_redis, turn)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["index"] for e in events if e["type"] == "step.started"] == [0, 1]
    assert step_text(events, 1, "reasoning.delta") == "It printed 42."
    assert step_text(events, 1, "content.delta") == "The answer is **42**."
    statuses = [e["text"] for e in events if e["type"] == "turn.status"]
    assert statuses == ["The worker restarted — resuming", ""]


def test_a_server_that_refuses_continuation_keeps_the_cut_step_as_a_labelled_attempt(agent_redis, make_turn):
    from chat.fragments import INTERRUPTED_LABEL, project_from_db

    turn = make_turn()
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    die_during_step_one(agent_redis, turn, 0, "It pr")
    with ScriptedModelServer(two_step_script, continuation=False) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    assert [b.get("continue_final_message", False) for b in server.requests] == [True, False]
    assert server.requests[1]["messages"][-1]["role"] == "tool", "the model does not see the cut attempt"
    turn.refresh_from_db()
    assert turn.status == "done"
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [(s.index, s.finish_reason) for s in steps] == [(0, "tool_calls"), (1, "interrupted"), (2, "stop")]
    assert steps[1].reasoning == "It pr" and steps[2].reasoning == "It printed 42."
    assert Message.objects.get(turn=turn).content == "The answer is **42**."
    events = stream_events(agent_redis, turn)
    assert [e["index"] for e in events if e["type"] == "step.started"] == [0, 1, 2]
    html = project_from_db(turn).render_full()
    assert INTERRUPTED_LABEL in html and html.count("It pr") == 2  # the attempt, then the retried step


@pytest.mark.slow
def test_database_writes_per_step_stay_constant_over_300_steps(agent_redis, make_turn, settings):
    from django.db import connection

    settings.AGENT_MAX_STEPS = 300
    settings.AGENT_MAX_TURN_TOKENS = 10**9
    settings.AGENT_CONTEXT_TOKENS = 12000
    settings.AGENT_MAX_STEP_TOKENS = 2000
    turn = make_turn()

    def script(body, n):
        done = steps_done(body)
        if "tools" not in body:
            return Reply(content="final", piece=64)
        return Reply(
            reasoning=f"step {done} " * 10,
            tool_calls=[("python", json.dumps({"code": f"#{done}"}))],
            piece=128,
        )

    writes: list[int] = []

    def count_writes(execute, sql, params, many, context):
        if not sql.lstrip().upper().startswith("SELECT"):
            writes.append(1)
        return execute(sql, params, many, context)

    from agent import tools as tools_module

    fake_python = tools_module.Tool(
        "python", "d", {"type": "object"}, lambda a, ctx: tools_module.ToolResult("ok")
    )
    original = tools_module.TOOLS["python"]
    tools_module.TOOLS["python"] = fake_python  # the sandbox would dominate the time; rows are what we count
    per_step: list[int] = []
    recorder_record = store.TurnRecorder.record

    def record(self, event):
        if event.type == "step.started":
            per_step.append(len(writes))
        recorder_record(self, event)

    store.TurnRecorder.record = record
    try:
        with ScriptedModelServer(script) as server, connection.execute_wrapper(count_writes):
            execute_turn(turn.id, client=ModelClient(server.url, "scripted"), checkpoint_every=3600)
    finally:
        store.TurnRecorder.record = recorder_record
        tools_module.TOOLS["python"] = original
    turn.refresh_from_db()
    assert turn.status == "done" and turn.steps == 300
    deltas = {b - a for a, b in zip(per_step[1:-1], per_step[2:-1], strict=False)}
    assert deltas == {5}, deltas  # step insert, tool call insert+update, step update, turn update


def test_a_sweep_probe_leaves_a_turn_with_a_live_lease_alone(agent_redis, make_turn):
    from chat.tasks import run_turn

    turn = make_turn()
    store.claim_turn(turn.id, "some-live-worker", lease_seconds=30)
    assert run_turn.apply(args=(turn.id,), kwargs={"sweep": True}).get() == "alive"
    turn.refresh_from_db()
    assert turn.lease_owner == "some-live-worker" and Step.objects.filter(turn=turn).count() == 0


def test_the_background_publisher_keeps_order_and_text_while_merging_a_backlog_of_deltas(agent_redis):
    import uuid

    from agent import events as ev
    from agent.publisher import BackgroundPublisher, EventPublisher, coalesce

    assert coalesce(
        [ev.ContentDelta("a"), ev.ContentDelta("b"), ev.ReasoningDelta("c"), ev.ContentDelta("d")]
    ) == [
        ev.ContentDelta("ab"),
        ev.ReasoningDelta("c"),
        ev.ContentDelta("d"),
    ]
    turn = uuid.uuid4()
    stream = TurnStream(agent_redis, chat_redis.keys(), turn)
    publisher = BackgroundPublisher(EventPublisher(stream, None, chat_redis.keys().group(uuid.uuid4())))
    sent = []
    for i in range(300):
        sent.append(ev.ContentDelta(text=f"{i} "))
        if i % 50 == 0:
            sent.append(ev.ToolCallStarted(call_id=f"functions.x:{i}", index=0, name="x"))
            sent.append(ev.ToolCallArguments(call_id=f"functions.x:{i}", delta='{"a":'))
            sent.append(ev.ToolCallArguments(call_id=f"functions.x:{i}", delta="1}"))
    for event in sent:
        publisher.publish(event)
    publisher.close(finished=True)
    got = [json.loads(f[b"e"]) for _, f in agent_redis.xrange(chat_redis.keys().stream(turn))]
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert "".join(e["text"] for e in got if e["type"] == "content.delta") == "".join(
        f"{i} " for i in range(300)
    )
    started = [e["call_id"] for e in got if e["type"] == "tool.started"]
    assert started == [f"functions.x:{i}" for i in range(0, 300, 50)]
    for call_id in started:
        args = "".join(e["delta"] for e in got if e["type"] == "tool.arguments" and e["call_id"] == call_id)
        assert args == '{"a":1}'


def test_a_checkpoint_reaches_postgres_within_a_second_while_the_model_is_silent(agent_redis, make_turn):
    turn = make_turn()
    # role chunk, then "first half " at ~2 s, then nothing for 2 s, then the rest.
    slow = Reply(reasoning="first half second half", content="done", piece=11, delay=2.0)
    with ScriptedModelServer([slow]) as server:

        def run():
            try:
                execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
            finally:
                connection.close()  # this thread's own connection

        worker = threading.Thread(target=run)
        worker.start()
        stream = chat_redis.turn_stream(turn.uuid)
        deadline = time.monotonic() + 10
        while not any(e.event.type == "reasoning.delta" for e in stream.read()):
            assert time.monotonic() < deadline, "no reasoning was published"
            time.sleep(0.01)
        published = time.monotonic()
        while not Step.objects.filter(turn=turn, reasoning="first half ").exists():
            assert time.monotonic() - published < 1.0, "the checkpoint took longer than a second"
            time.sleep(0.01)
        checkpointed = time.monotonic() - published
        assert Step.objects.get(turn=turn).finished is None  # mid-step: the model is still silent
        worker.join(30)
    assert checkpointed < 1.0
    turn.refresh_from_db()
    assert turn.status == "done" and Step.objects.get(turn=turn).reasoning == "first half second half"


def test_a_step_cut_off_while_its_tool_ran_keeps_the_call_as_an_error_and_the_turn_goes_on(
    agent_redis, make_turn
):
    turn = make_turn()
    with ScriptedModelServer(two_step_script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    # The worker died while step 0's python call ran: the call row running, nothing after it.
    events = stream_events(agent_redis, turn)
    keep = next(i for i, e in enumerate(events) if e["type"] == "tool.running") + 1
    key = chat_redis.keys().stream(turn.uuid)
    agent_redis.delete(key)
    for e in events[:keep]:
        agent_redis.xadd(key, {"e": json.dumps(e)}, id=f"{e['seq']}-0")
    Step.objects.filter(turn=turn, index=1).delete()
    Step.objects.filter(turn=turn, index=0).update(finished=None, finish_reason="")
    ToolCall.objects.filter(step__turn=turn).update(status="running", result="", finished=None)
    Message.objects.filter(turn=turn).delete()
    Turn.objects.filter(id=turn.id).update(status="running", lease_expires=None, finished=None, steps=0)

    def call_again(body, n):
        """The model makes the cut-off call again (allowed: it never returned), then answers."""
        if store.TOOL_CUT_OFF in body["messages"][-1]["content"]:
            return Reply(reasoning="Again.", tool_calls=[("python", json.dumps({"code": "print(6 * 7)"}))])
        return Reply(reasoning="It printed 42.", content="The answer is **42**.")

    with ScriptedModelServer(call_again) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    assert len(server.requests) == 2 and "continue_final_message" not in server.requests[0]
    tool_message = server.requests[0]["messages"][-1]
    assert tool_message["role"] == "tool" and store.TOOL_CUT_OFF in tool_message["content"]
    turn.refresh_from_db()
    assert turn.status == "done" and turn.steps == 3
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert [(s.index, s.finish_reason) for s in steps] == [(0, "tool_calls"), (1, "tool_calls"), (2, "stop")]
    cut, again = ToolCall.objects.filter(step__turn=turn).order_by("step__index")
    assert cut.status == "error" and cut.error == store.TOOL_CUT_OFF
    assert again.status == "done" and again.result.strip() == "42", "the repeat guard let it run"
    events = stream_events(agent_redis, turn)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["index"] for e in events if e["type"] == "step.started"] == [0, 1, 2]
    finished = [e for e in events if e["type"] == "tool.finished"]
    assert [e["error"] for e in finished] == [store.TOOL_CUT_OFF, ""]
