"""kimi-mini behind our server, driven by the real agent loop: it calls the python tool for a held-out
arithmetic question and answers with the right number; with thinking off it writes no reasoning."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent import events as ev
from agent.client import ModelClient
from agent.loop import AgentLoop, LoopConfig, system_prompt

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@contextlib.contextmanager
def serve(model: Path, timeout: float = 300):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model", str(model), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become healthy")
            time.sleep(0.5)
        yield base + "/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def kimi_mini_server(built_kimi_mini):
    path, _ = built_kimi_mini
    with serve(path) as url:
        yield url


def run_turn(url: str, question: str, thinking: bool, max_steps=4) -> list:
    loop = AgentLoop(
        ModelClient(url, "kimi-mini"), LoopConfig(thinking=thinking, max_steps=max_steps, max_step_tokens=256)
    )
    messages = [{"role": "system", "content": system_prompt()}, {"role": "user", "content": question}]
    return list(loop.run(messages))


@pytest.mark.xfail(
    strict=False,
    reason="issue #16 open: greedy kimi-mini is not stable on this question across full-suite runs "
    "(2 of 5, with the python tool's old description and its new one alike, wrote print((23*47))",
)
def test_held_out_arithmetic_question_calls_python_and_answers_the_right_number(kimi_mini_server):
    events = run_turn(kimi_mini_server, "How much is 23 × 47?", thinking=True)  # a held-out template
    calls = [e for e in events if isinstance(e, ev.ToolCallFinished)]
    assert calls and calls[0].name == "python" and calls[0].result.strip() == "1081"
    final = [e for e in events if isinstance(e, ev.TurnFinished)][-1]
    assert final.status == "done" and "1081" in final.content


def test_thinking_off_produces_no_reasoning(kimi_mini_server):
    events = run_turn(kimi_mini_server, "Thank you so much.", thinking=False)
    assert not [e for e in events if isinstance(e, ev.ReasoningDelta) and e.text.strip()]
    final = [e for e in events if isinstance(e, ev.TurnFinished)][-1]
    assert final.status == "done" and final.content.strip() and not final.reasoning.strip()
