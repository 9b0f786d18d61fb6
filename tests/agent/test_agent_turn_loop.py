"""The agent loop against a scripted OpenAI-compatible server: what a turn does, step by step."""

import json
import threading
import time

import pytest
from scripted_model import Reply, ScriptedModelServer

from agent import events as ev
from agent.client import ModelClient
from agent.context import prompt_tokens
from agent.loop import WRAP_UP_NOTE, AgentLoop, LoopConfig
from agent.tools import Tool, ToolError, ToolResult, get_tool

pytestmark = pytest.mark.timeout(120)


def make_tool(name, fn):
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    return Tool(name=name, description=f"test tool {name}", parameters=schema, run=fn)


class Recorder:
    """A tool that records its calls and optionally sleeps."""

    def __init__(self, sleep=0.0):
        self.calls = []
        self.sleep = sleep

    def __call__(self, arguments, ctx):
        self.calls.append(arguments)
        time.sleep(self.sleep)
        return ToolResult(f"result for {arguments.get('x')}")


def run_loop(server, tools=None, config=None, is_cancelled=lambda: False, messages=None, **client_kw):
    client = ModelClient(server.url, "scripted", sleep=client_kw.pop("sleep", lambda s: None), **client_kw)
    loop = AgentLoop(client, config or LoopConfig(), tools or {}, is_cancelled)
    messages = messages if messages is not None else [{"role": "user", "content": "question"}]
    events = list(loop.run(messages))
    return events, messages


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_a_final_answer_streams_reasoning_then_content_and_finishes_done():
    with ScriptedModelServer([Reply(reasoning="Let me think.", content="The answer is 42.")]) as server:
        events, messages = run_loop(server)
    kinds = [e.type for e in events]
    assert kinds[0] == "turn.started" and kinds[1] == "step.started" and kinds[-1] == "turn.finished"
    assert "".join(e.text for e in of_type(events, ev.ReasoningDelta)) == "Let me think."
    assert "".join(e.text for e in of_type(events, ev.ContentDelta)) == "The answer is 42."
    assert kinds.index("reasoning.delta") < kinds.index("content.delta")
    final = events[-1]
    assert (final.status, final.content, final.reasoning) == ("done", "The answer is 42.", "Let me think.")
    assert of_type(events, ev.StepFinished)[0].usage["completion_tokens"] > 0
    assert messages[-1]["role"] == "assistant"


def test_thinking_flag_goes_as_chat_template_kwargs_and_tools_are_offered():
    with ScriptedModelServer([Reply(content="hi")]) as server:
        run_loop(server, tools={"echo": make_tool("echo", Recorder())}, config=LoopConfig(thinking=False))
    body = server.requests[0]
    assert body["chat_template_kwargs"] == {"thinking": False}
    assert body["stream"] is True
    assert [t["function"]["name"] for t in body["tools"]] == ["echo"]


def test_parallel_tool_calls_run_concurrently_and_come_back_in_the_models_order():
    slow = Recorder(sleep=0.6)
    script = [
        Reply(reasoning="Two lookups.", tool_calls=[("slow", '{"x": "a"}'), ("slow", '{"x": "b"}')]),
        Reply(content="done"),
    ]
    with ScriptedModelServer(script) as server:
        t0 = time.monotonic()
        events, _ = run_loop(server, tools={"slow": make_tool("slow", slow)})
        elapsed = time.monotonic() - t0
    assert elapsed < 1.1, "the two 0.6 s calls must overlap"
    sent = server.requests[1]["messages"]
    assistant = sent[1]
    assert assistant["role"] == "assistant"
    assert assistant["reasoning_content"] == "Two lookups.", "tool-call messages go back with their reasoning"
    assert [c["id"] for c in assistant["tool_calls"]] == ["functions.slow:0", "functions.slow:1"]
    assert [(m["role"], m["tool_call_id"], m["content"]) for m in sent[2:4]] == [
        ("tool", "functions.slow:0", "result for a"),
        ("tool", "functions.slow:1", "result for b"),
    ]
    started = of_type(events, ev.ToolCallStarted)
    assert [(s.call_id, s.name) for s in started] == [
        ("functions.slow:0", "slow"),
        ("functions.slow:1", "slow"),
    ]
    args = "".join(e.delta for e in of_type(events, ev.ToolCallArguments) if e.call_id == "functions.slow:0")
    assert json.loads(args) == {"x": "a"}
    assert {f.status for f in of_type(events, ev.ToolCallFinished)} == {"done"}


def test_malformed_arguments_and_unknown_tools_become_results_the_model_reads():
    echo = Recorder()
    script = [
        Reply(
            tool_calls=[("echo", '{"x": "unterminated'), ("teleport", '{"to": "mars"}'), ("echo", "[1, 2]")]
        ),
        Reply(content="recovered"),
    ]
    with ScriptedModelServer(script) as server:
        events, _ = run_loop(server, tools={"echo": make_tool("echo", echo)})
    finished = of_type(events, ev.ToolCallFinished)
    assert [f.status for f in finished] == ["error", "error", "error"]
    assert "not valid JSON" in finished[0].result
    assert "no tool named 'teleport'" in finished[1].result and "echo" in finished[1].result
    assert "must be a JSON object" in finished[2].result
    assert echo.calls == []
    tool_messages = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [f.result for f in finished]
    assert events[-1].status == "done" and events[-1].content == "recovered"


def test_tool_exceptions_and_tool_errors_never_end_the_turn():
    def broken(arguments, ctx):
        raise RuntimeError("segfault in the flux capacitor")

    def refusing(arguments, ctx):
        raise ToolError("that page does not exist")

    script = [Reply(tool_calls=[("broken", "{}"), ("refusing", "{}")]), Reply(content="ok")]
    with ScriptedModelServer(script) as server:
        events, _ = run_loop(
            server, tools={"broken": make_tool("broken", broken), "refusing": make_tool("refusing", refusing)}
        )
    finished = {f.name: f for f in of_type(events, ev.ToolCallFinished)}  # in completion order
    assert "RuntimeError: segfault in the flux capacitor" in finished["broken"].result
    assert finished["refusing"].result == "Error: that page does not exist"
    assert events[-1].status == "done"


def test_transient_errors_are_retried_with_backoff_then_the_turn_completes():
    sleeps = []
    script = [Reply(status=503), Reply(status=429), Reply(status=502), Reply(content="finally")]
    with ScriptedModelServer(script) as server:
        events, _ = run_loop(server, sleep=sleeps.append, backoff=0.1, max_backoff=10)
    assert events[-1].status == "done" and events[-1].content == "finally"
    assert len(server.requests) == 4 and len(sleeps) == 3
    assert all(0 <= s <= 0.1 * 2**i for i, s in enumerate(sleeps)), "full jitter under an exponential cap"


def test_a_client_error_is_not_retried_and_fails_the_turn_readably():
    with ScriptedModelServer([Reply(status=400)]) as server:
        events, _ = run_loop(server)
    assert len(server.requests) == 1
    assert events[-1].status == "failed" and "HTTP 400" in events[-1].error


def test_an_unreachable_model_server_fails_the_turn_after_retries_keeping_partial_output():
    step_one = Reply(
        reasoning="first I search", content="Partial finding.", tool_calls=[("echo", '{"x": "q"}')]
    )
    with ScriptedModelServer([step_one]) as server:
        url = server.url
        # After step one the server goes away: connection refused on every retry.
        client = ModelClient(url, "scripted", max_attempts=3, sleep=lambda s: None)

        def stop_server(arguments, ctx):
            server.httpd.shutdown()
            server.httpd.server_close()
            return ToolResult("ok")

        loop = AgentLoop(client, LoopConfig(), {"echo": make_tool("echo", stop_server)})
        events = list(loop.run([{"role": "user", "content": "q"}]))
    final = events[-1]
    assert final.status == "failed"
    assert "could not reach the model server" in final.error and "3 attempts" in final.error
    assert final.reasoning == "first I search"
    assert "".join(e.text for e in of_type(events, ev.ContentDelta)) == "Partial finding."


def test_cancel_mid_stream_closes_the_stream_and_keeps_the_partial_answer():
    flag = threading.Event()
    long_answer = "word " * 400
    with ScriptedModelServer([Reply(reasoning="hmm", content=long_answer, piece=5, delay=0.01)]) as server:
        client = ModelClient(server.url, "scripted")
        loop = AgentLoop(client, LoopConfig(cancel_poll_seconds=0.0), {}, flag.is_set)
        events = []
        for event in loop.run([{"role": "user", "content": "q"}]):
            events.append(event)
            if len(of_type(events, ev.ContentDelta)) == 3:
                flag.set()
        deadline = time.monotonic() + 5
        while server.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    final = events[-1]
    assert final.status == "cancelled"
    assert final.content == "word " * 3
    assert of_type(events, ev.StepFinished)[-1].finish_reason == "cancelled"
    assert server.disconnects == 1, "the server must see the client hang up (so it aborts generation)"


def test_cancel_mid_tool_kills_the_sandboxed_program():
    flag = threading.Event()
    code = json.dumps({"code": "import time\ntime.sleep(60)"})
    with ScriptedModelServer([Reply(tool_calls=[("python", code)]), Reply(content="never")]) as server:
        client = ModelClient(server.url, "scripted")
        loop = AgentLoop(
            client, LoopConfig(cancel_poll_seconds=0.0), {"python": get_tool("python")}, flag.is_set
        )
        events = []
        t0 = time.monotonic()
        for event in loop.run([{"role": "user", "content": "q"}]):
            events.append(event)
            if isinstance(event, ev.ToolCallRunning):
                threading.Timer(0.5, flag.set).start()
        elapsed = time.monotonic() - t0
    assert elapsed < 5
    finished = of_type(events, ev.ToolCallFinished)
    assert [f.status for f in finished] == ["cancelled"]
    assert events[-1].status == "cancelled"
    assert len(server.requests) == 1


def test_the_loop_guard_answers_a_repeated_call_with_a_note_instead_of_running_it_again():
    echo = Recorder()
    same = ("echo", '{"x": "same"}')
    script = [Reply(tool_calls=[same]), Reply(tool_calls=[("echo", '{ "x" : "same" }')]), Reply(content="ok")]
    with ScriptedModelServer(script) as server:
        events, _ = run_loop(server, tools={"echo": make_tool("echo", echo)})
    assert echo.calls == [{"x": "same"}]
    second = of_type(events, ev.ToolCallFinished)[1]
    assert second.status == "error" and "already called echo" in second.result


def test_the_last_allowed_step_asks_for_a_final_answer_without_tools():
    def script(body, n):
        return (
            Reply(tool_calls=[("echo", json.dumps({"x": n}))])
            if "tools" in body
            else Reply(content="summary")
        )

    with ScriptedModelServer(script) as server:
        events, _ = run_loop(
            server, tools={"echo": make_tool("echo", Recorder())}, config=LoopConfig(max_steps=4)
        )
    assert len(server.requests) == 4
    last = server.requests[-1]
    assert "tools" not in last and last["messages"][-1]["content"] == WRAP_UP_NOTE
    assert events[-1].status == "done" and events[-1].content == "summary"


@pytest.mark.slow
def test_a_300_step_run_keeps_every_prompt_under_the_context_budget():
    config = LoopConfig(
        max_steps=300,
        max_turn_tokens=10**9,
        context_tokens=12000,
        max_step_tokens=2000,
        tool_result_chars=3000,
    )
    budget = config.context_tokens - config.max_step_tokens

    def script(body, n):
        if "tools" not in body:
            return Reply(content="final after 300 steps", piece=64)
        return Reply(
            reasoning=f"step {n}: " + "thinking " * 30,
            tool_calls=[("big", json.dumps({"x": str(n)}))],
            piece=256,
        )

    big = make_tool("big", lambda a, ctx: ToolResult(f"page {a['x']} " + "lorem ipsum " * 400))
    with ScriptedModelServer(script) as server:
        events, messages = run_loop(server, tools={"big": big}, config=config)
    assert len(server.requests) == 300
    assert events[-1].status == "done" and events[-1].content == "final after 300 steps"
    sizes = [prompt_tokens(r["messages"]) for r in server.requests]
    assert max(sizes) <= budget, max(sizes)
    newest = server.requests[-2]["messages"]
    assert "lorem ipsum" in newest[-1]["content"], "the newest tool output is kept in full"
    assert len(messages) == 1 + 299 * 2 + 1, "the transcript itself keeps everything"


@pytest.mark.parametrize("temperature", [None, 0.2])
def test_the_client_asks_for_the_configured_temperature_and_otherwise_leaves_it_to_the_server(temperature):
    with ScriptedModelServer(lambda body, n: Reply(content="ok")) as server:
        client = ModelClient(server.url, "scripted", temperature=temperature)
        list(client.stream([{"role": "user", "content": "hi"}], None, thinking=False, max_tokens=8))
    assert server.requests[0].get("temperature") == temperature
