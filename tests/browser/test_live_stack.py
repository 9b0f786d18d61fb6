"""The whole stack in a real browser: Daphne, a real Celery worker running agent turns, and a model
server — the real inference server (`python -m inference serve`, the bundled default model) or, for
turns that must think and call tools on cue, the scripted OpenAI-compatible server from the agent
tests (a test double at the model's network border, speaking the real streaming protocol)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, _free_port, log_in, stack_env
from playwright.sync_api import expect

from chat.models import Turn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = "bench/results/screens"


class Process:
    """A child process in its own group, with its output in a log file shown when something fails."""

    def __init__(self, name, cmd, env):
        self.log_path = Path(f"/tmp/kimiweb-live-{name}-{os.getpid()}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the child writes to it for its lifetime
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def start_worker(stack_db, llm_url, queue="agent", **extra_env) -> Process:
    """A real Celery worker on `queue`: turns (`agent`, as the Procfile's worker) or uploads (`documents`,
    as its extractor)."""
    env = {**stack_env(stack_db), "LLM_BASE_URL": llm_url, "AGENT_LEASE_SECONDS": "5", **extra_env}
    cmd = [sys.executable, "-m", "celery", "-A", "kimiweb", "worker", "-Q", queue, "-c", "2"]
    cmd += ["-n", f"live{queue}{os.getpid()}@%h", "--without-gossip", "--without-mingle", "-l", "info"]
    worker = Process(f"worker-{queue}", cmd, env)
    time.sleep(3)  # imports; a task sent earlier waits in the queue anyway
    if worker.proc.poll() is not None:
        raise RuntimeError("worker exited:\n" + worker.tail())
    return worker


def send(page, live_url, text, thinking=True):
    page.goto(live_url + "/")
    if page.locator("#thinking-toggle").is_checked() != thinking:
        page.locator("label.toggle").click()
    page.fill("#composer-text", text)
    page.keyboard.press("Enter")
    page.wait_for_url(live_url + "/c/**")


def think_call_python_answer(body, n):
    """Think slowly, run Python once, think again, then answer: every part of a thinking turn."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        return Reply(
            reasoning="Let me work this out carefully. " * 12,
            tool_calls=[("python", json.dumps({"code": "print(6 * 7)"}))],
            piece=6,
            delay=0.04,
        )
    return Reply(reasoning="The tool says 42. ", content="The answer is **42**. " * 6, piece=4, delay=0.05)


def test_thinking_turn_streams_thinking_a_tool_card_and_the_answer_and_survives_reload(
    live_url, stack_db, new_page, user, page_errors
):
    with ScriptedModelServer(think_call_python_answer) as model:
        worker = start_worker(stack_db, model.url)
        try:
            page = new_page()
            log_in(page, live_url, user)
            send(page, live_url, "What is six times seven?")
            turn = Turn.objects.filter(conversation__owner=user).latest("created")
            u = turn.uuid
            expect(page.locator(f"#trace-{u}")).to_contain_text("Let me work this out", timeout=30_000)
            expect(page.locator(f"#tool-{u}-2")).to_contain_text("python", timeout=30_000)
            expect(page.locator(f"#tool-{u}-2")).to_contain_text("print(6 * 7)")
            expect(page.locator(f"#answer-{u}")).to_contain_text("The answer is", timeout=30_000)
            # Reload while the answer streams: everything so far is back at once, then it continues.
            page.reload()
            expect(page.locator(f"#answer-{u}")).to_contain_text("The answer is", timeout=1000)
            expect(page.locator(f"#tool-{u}-2")).to_be_attached(timeout=1000)
            expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done", timeout=30_000)
            expect(page.locator(f"#answer-{u} strong").first).to_have_text("42")
            trace = page.locator(f"#trace-{u}").text_content()
            assert trace.count("The tool says 42.") == 1  # no duplicate after the reload
            turn.refresh_from_db()
            assert turn.status == "done"
            page.screenshot(path=f"{SHOTS}/live-stack.png")
        finally:
            worker.stop()
    assert not page_errors, page_errors


def test_stop_mid_stream_on_the_live_stack_keeps_the_partial_answer(
    live_url, stack_db, new_page, user, page_errors
):
    slow = Reply(reasoning="Hmm. ", content="word " * 400, piece=5, delay=0.05)
    with ScriptedModelServer(lambda body, n: slow) as model:
        worker = start_worker(stack_db, model.url)
        try:
            page = new_page()
            log_in(page, live_url, user)
            send(page, live_url, "Say many words")
            turn = Turn.objects.filter(conversation__owner=user).latest("created")
            answer = page.locator(f"#answer-{turn.uuid}")
            expect(answer).to_contain_text("word word word", timeout=30_000)
            page.keyboard.press("Escape")  # the stop shortcut
            status = page.locator(f"#status-{turn.uuid}")
            expect(status).to_have_attribute("data-status", "cancelled", timeout=15_000)
            kept = answer.text_content()
            assert 3 <= kept.count("word") < 400
            turn.refresh_from_db()
            assert turn.status == "cancelled"
            page.reload()
            expect(page.locator(f"#answer-{turn.uuid}")).to_contain_text("word word word")
        finally:
            worker.stop()
    assert not page_errors, page_errors


def test_a_turn_against_the_real_inference_server(live_url, stack_db, new_page, user, page_errors):
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    server = Process("inference", [sys.executable, "-m", "inference", "serve", "--port", str(port)], env)
    worker = None
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("inference server did not start:\n" + server.tail())
            time.sleep(0.5)
        worker = start_worker(
            stack_db, f"http://127.0.0.1:{port}/v1", AGENT_MAX_STEP_TOKENS="48", AGENT_MAX_STEPS="2"
        )
        page = new_page()
        log_in(page, live_url, user)
        send(page, live_url, "Say hello in one short sentence.", thinking=True)
        turn = Turn.objects.filter(conversation__owner=user).latest("created")
        status = page.locator(f"#status-{turn.uuid}")
        expect(status).to_have_attribute("data-status", "done", timeout=180_000)
        turn.refresh_from_db()
        assert turn.status == "done", (turn.status, turn.error)
        shown = page.locator(f"#turn-{turn.uuid}").text_content()
        assert turn.answer.content.strip()[:20] in shown or page.locator(f"#trace-{turn.uuid}").text_content()
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    assert not page_errors, page_errors
