"""The model client outlasts a model-server restart: it waits (and says so) before the first chunk,
resumes a stream cut mid-answer without repeating a character, and gives up readably, keeping what
was delivered, when the server stays down or cannot repeat itself. A real scripted server behind a
loopback proxy that goes down and comes back on the same port."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from scripted_model import Reply, ScriptedModelServer

from agent import events as ev
from agent.client import WAITING, ModelClient, ModelError
from agent.loop import AgentLoop, LoopConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from proxy import FaultProxy  # noqa: E402

pytestmark = pytest.mark.timeout(60)

THINKING = "Let me think about this step by step, carefully. " * 4
ANSWER = "The answer is forty-two, and here is why it is so. " * 6


def fast_client(url: str, **kw) -> ModelClient:
    return ModelClient(url, "scripted", backoff=0.05, max_backoff=0.2, **kw)


def collect(client: ModelClient, stop_after: float = 30) -> tuple[list, BaseException | None]:
    chunks, error = [], None
    deadline = time.monotonic() + stop_after
    try:
        for chunk in client.stream([{"role": "user", "content": "q"}], None, thinking=True, max_tokens=512):
            chunks.append(chunk)
            assert time.monotonic() < deadline
    except ModelError as exc:
        error = exc
    return chunks, error


def text_of(chunks) -> tuple[str, str]:
    return "".join(c.reasoning for c in chunks), "".join(c.content for c in chunks)


@pytest.fixture
def served():
    with ScriptedModelServer(lambda body, n: Reply(reasoning=THINKING, content=ANSWER, piece=7)) as server:
        proxy = FaultProxy(server.httpd.server_address[1])
        yield server, proxy
        proxy.close()


def test_a_server_down_when_the_call_starts_is_waited_for_and_the_wait_is_said(served):
    server, proxy = served
    proxy.down()
    threading.Timer(1.5, proxy.up).start()
    started = time.monotonic()
    chunks, error = collect(fast_client(proxy.url, retry_seconds=20))
    assert error is None
    assert time.monotonic() - started >= 1.5
    statuses = [c.status for c in chunks if c.status is not None]
    assert statuses == [WAITING, ""]  # said once while waiting, cleared once the server answers
    assert text_of(chunks) == (THINKING, ANSWER)


def test_a_stream_cut_mid_answer_resumes_where_it_stopped_without_repeating_a_character(served):
    server, proxy = served
    proxy.cut_after(2500)  # inside the thinking: headers plus a few dozen SSE chunks
    chunks, error = collect(fast_client(proxy.url, retry_seconds=20))
    assert error is None
    assert text_of(chunks) == (THINKING, ANSWER)
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]  # the step is asked again, unchanged
    assert [c.status for c in chunks if c.status is not None] == [WAITING, ""]


def test_a_server_that_answers_differently_after_a_cut_fails_readably_and_keeps_what_was_delivered():
    def script(body, n):
        return Reply(
            reasoning=THINKING if n == 0 else "Something else entirely. " * 8, content=ANSWER, piece=7
        )

    with ScriptedModelServer(script) as server:
        proxy = FaultProxy(server.httpd.server_address[1])
        proxy.cut_after(2500)
        chunks, error = collect(fast_client(proxy.url, retry_seconds=20))
        proxy.close()
    assert error is not None and "answered differently" in str(error)
    reasoning, _ = text_of(chunks)
    assert reasoning and THINKING.startswith(reasoning)


def test_a_server_that_stays_down_is_given_up_on_after_retry_seconds(served):
    server, proxy = served
    proxy.down()
    started = time.monotonic()
    chunks, error = collect(fast_client(proxy.url, retry_seconds=1.5))
    waited = time.monotonic() - started
    assert error is not None
    assert "could not reach the model server; gave up after" in str(error)
    assert 1.4 <= waited < 5
    assert [c.status for c in chunks] == [WAITING]


def test_retry_seconds_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLM_RETRY_SECONDS", "42")
    assert ModelClient("http://127.0.0.1:9/v1", "m").retry_seconds == 42
    monkeypatch.delenv("LLM_RETRY_SECONDS")
    assert ModelClient("http://127.0.0.1:9/v1", "m").retry_seconds == 60


def test_the_turn_shows_the_wait_and_a_permanent_outage_ends_it_with_its_text_kept():
    def script(body, n):
        if n > 0:
            proxy.down()  # the server that was cut does not come back
            return Reply(status=503)
        return Reply(reasoning=THINKING, content=ANSWER, piece=7)

    with ScriptedModelServer(script) as server:
        proxy = FaultProxy(server.httpd.server_address[1])
        proxy.cut_after(2500)
        loop = AgentLoop(fast_client(proxy.url, retry_seconds=1.5), LoopConfig(), {})
        events = list(loop.run([{"role": "user", "content": "q"}]))
        proxy.close()
    statuses = [e.text for e in events if isinstance(e, ev.TurnStatus)]
    assert statuses == [WAITING]
    final = events[-1]
    assert final.status == "failed" and "could not reach the model server" in final.error
    shown = "".join(e.text for e in events if isinstance(e, ev.ReasoningDelta))
    assert shown and final.reasoning == shown
