"""One whole turn against the real in-repo inference server (`python -m inference serve`)."""

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chat import redis as chat_redis
from chat.models import Message, Step
from chat.tasks import execute_turn

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(400),
    pytest.mark.skipif(
        importlib.util.find_spec("inference.server.cli") is None,
        reason="the inference server is not built yet",
    ),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def inference_server():
    port = free_port()
    log = open("/tmp/agent-e2e-inference.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model", "default", "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"the inference server exited with {proc.returncode}; see /tmp/agent-e2e-inference.log"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the inference server did not come up in 240 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_turn_against_the_in_repo_inference_server_completes_with_a_trace(
    inference_server, agent_redis, make_turn, settings
):
    settings.LLM_BASE_URL = inference_server
    settings.LLM_MODEL = "default"
    settings.AGENT_MAX_STEPS = 3
    settings.AGENT_MAX_STEP_TOKENS = 48
    turn = make_turn("What is 2 + 2? Answer in one short sentence.", thinking=False)
    execute_turn(turn.id)
    turn.refresh_from_db()
    assert turn.status == "done", turn.error
    assert 1 <= turn.steps <= 3 and turn.tokens_in > 0 and turn.tokens_out > 0
    steps = list(Step.objects.filter(turn=turn).order_by("index"))
    assert len(steps) == turn.steps and all(s.finished for s in steps)
    answer = Message.objects.get(turn=turn)
    assert answer.content.strip(), "the small model said something"
    events = [json.loads(f[b"e"]) for _, f in agent_redis.xrange(chat_redis.keys().stream(turn.uuid))]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (
        "".join(e["text"] for e in events if e["type"] == "content.delta").strip()
        == steps[-1].content.strip()
    )
    assert events[-1]["type"] == "turn.finished" and events[-1]["status"] == "done"
