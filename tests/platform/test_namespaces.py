"""Two installations on one Redis server never touch each other's work (issue #20).

Two stacks - each a database, a Daphne and a real Celery worker consuming `-Q agent` as the Procfile
does - share this run's Redis. Stack A names its namespace (`KIMIWEB_NAMESPACE`, this run's plus `_a`); stack B
derives its own from its database's name, as a deployment does by default. B's database is a copy of
A's, so the same user owns a conversation with the same uuid in both and the turns get the same ids:
without namespaces, group names, stream keys and task ids would all collide. The model is the
scripted border double; each stack's socket must see its own answer and nothing of the other's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets
from django.conf import settings
from django.db import connection

from chat.models import Conversation, Turn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-test-passphrase-42"
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_params() -> dict:
    db = settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or "postgres",
    }


def database_url(name: str) -> str:
    p = pg_params()
    return f"postgres://{p['user']}@{p['host']}:{p['port']}/{name}"


def derived_namespace(database_name: str) -> str:
    """What kimiweb/settings.py derives when KIMIWEB_NAMESPACE is unset."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", database_name)[:40]


class Process:
    """A child in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict):
        self.log_path = Path(f"/tmp/kimiweb-ns-{name}-{os.getpid()}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the child writes to it for its lifetime
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def text(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Stack:
    """One installation: Daphne and a Celery worker over one database, on the shared Redis."""

    def __init__(self, name: str, database: str, namespace: str | None, llm_url: str):
        env = {k: v for k, v in os.environ.items() if k != "KIMIWEB_NAMESPACE"}
        env |= {
            "DATABASE_URL": database_url(database),
            "REDIS_URL": settings.REDIS_URL,
            "LLM_BASE_URL": llm_url,
            "DEBUG": "true",
            "DB_CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("CELERY_BROKER_URL", None)
        if namespace is not None:
            env["KIMIWEB_NAMESPACE"] = namespace
        self.namespace = namespace or derived_namespace(database)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web = Process(
            f"{name}-web",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "kimiweb.asgi:application",
            ],
            env,
        )
        worker = [sys.executable, "-m", "celery", "-A", "kimiweb", "worker", "-Q", "agent", "-c", "1"]
        worker += ["-n", f"{name}{os.getpid()}@%h", "--without-gossip", "--without-mingle", "-l", "info"]
        self.worker = Process(f"{name}-worker", worker, env)

    def wait_ready(self, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/accounts/login/", timeout=2).status_code == 200 and (
                    " ready." in self.worker.text()
                ):
                    return
            except httpx.HTTPError:
                pass
            for process in (self.web, self.worker):
                if process.proc.poll() is not None:
                    raise RuntimeError(f"{process.log_path} exited:\n{process.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"stack did not start:\n{self.web.text()[-2000:]}\n{self.worker.text()[-2000:]}"
                )
            time.sleep(0.3)

    def session_cookie(self, username: str) -> str:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            client.get("/accounts/login/")
            token = client.cookies["csrftoken"]
            response = client.post(
                "/accounts/login/",
                data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
                headers={"Referer": self.url + "/accounts/login/"},
            )
            assert response.status_code in (200, 302), response.text[:500]
            return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME]}"

    def stop(self):
        self.worker.stop()
        self.web.stop()


@pytest.fixture
def copy_of_the_database():
    """A second database with the test database's schema and rows (a `CREATE DATABASE ... TEMPLATE`)."""
    source = connection.settings_dict["NAME"]
    copy = f"{source}_b"

    def make() -> str:
        connection.close()  # a template must have no other session
        with psycopg.connect(dbname="postgres", autocommit=True, **pg_params()) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"')
        return copy

    yield make
    with psycopg.connect(dbname="postgres", autocommit=True, **pg_params()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def answer_for(body, n):
    """Each installation's question gets its own answer, slowly, so the two turns overlap."""
    question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    word = "ALPHA" if "alpha" in question else "BRAVO"
    return Reply(reasoning=f"{word} thinks. " * 10, content=f"{word}-ANSWER " * 10, piece=6, delay=0.03)


async def run_turn_over_socket(stack: Stack, conversation_uuid, cookie: str, text: str) -> str:
    """Send a message on the conversation's socket; return every frame up to the turn's end."""
    uri = f"ws://127.0.0.1:{stack.port}/ws/conversations/{conversation_uuid}/"
    seen = ""
    async with websockets.connect(uri, additional_headers={"Cookie": cookie, "Origin": stack.url}) as ws:
        await ws.send(json.dumps({"action": "resume"}))
        await ws.send(json.dumps({"action": "send", "text": text, "thinking": True}))
        deadline = time.monotonic() + 120
        while 'data-status="done"' not in seen and 'data-status="failed"' not in seen:
            seen += await asyncio.wait_for(ws.recv(), timeout=max(1.0, deadline - time.monotonic()))
        await asyncio.sleep(1.0)  # anything the other installation might still leak in
        try:
            while True:
                seen += await asyncio.wait_for(ws.recv(), timeout=0.5)
        except TimeoutError:
            pass
    return seen


def rows_of(database: str, sql: str) -> list[tuple]:
    with psycopg.connect(dbname=database, **pg_params()) as conn:
        return conn.execute(sql).fetchall()


def test_two_stacks_on_one_redis_each_run_only_their_own_turns_and_see_only_their_own_events(
    make_user, copy_of_the_database
):
    user = make_user("shared-name")
    conversation = Conversation.objects.create(owner=user, title="same uuid in both")
    database_a = connection.settings_dict["NAME"]
    database_b = copy_of_the_database()
    with ScriptedModelServer(answer_for) as model:
        # A namespace of its own: tasks other tests of this run enqueued (for turns their rolled-back
        # transactions no longer hold) wait in the run's queue, and would reach this worker.
        a = Stack("a", database_a, f"{settings.KIMIWEB_NAMESPACE}_a", model.url)
        b = Stack("b", database_b, None, model.url)
        try:
            a.wait_ready()
            b.wait_ready()
            assert a.namespace != b.namespace
            cookie_a, cookie_b = a.session_cookie(user.username), b.session_cookie(user.username)

            async def both():
                return await asyncio.gather(
                    run_turn_over_socket(a, conversation.uuid, cookie_a, "alpha: what is yours?"),
                    run_turn_over_socket(b, conversation.uuid, cookie_b, "bravo: what is yours?"),
                )

            seen_a, seen_b = asyncio.run(both())
        finally:
            a.stop()
            b.stop()
        worker_logs = a.worker.text() + b.worker.text()

    assert "ALPHA-ANSWER" in seen_a and "BRAVO" not in seen_a
    assert "BRAVO-ANSWER" in seen_b and "ALPHA" not in seen_b
    turn_a = Turn.objects.select_related("answer").get(conversation=conversation)
    assert turn_a.status == "done" and turn_a.answer.content.startswith("ALPHA-ANSWER")
    ((status_b, answer_b, id_b),) = rows_of(
        database_b,
        "SELECT t.status, m.content, t.id FROM chat_turn t JOIN chat_message m ON m.turn_id = t.id "
        "AND m.role = 'assistant'",
    )
    assert status_b == "done" and answer_b.startswith("BRAVO-ANSWER")
    assert id_b == turn_a.id  # the same turn id in both: only the namespace kept the tasks apart
    assert len(model.requests) == 2
    assert "is not in this database" not in worker_logs


def test_a_worker_given_a_turn_its_database_lacks_warns_and_does_not_report_success():
    from kimiweb.celery import app

    with ScriptedModelServer([]) as model:
        stack = Stack("lone", connection.settings_dict["NAME"], settings.KIMIWEB_NAMESPACE, model.url)
        try:
            stack.wait_ready()
            result = app.send_task("agent.tasks.run_turn", args=[987654321], queue="agent")
            deadline = time.monotonic() + 30
            while "987654321" not in stack.worker.text() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stack.stop()
        log = stack.worker.text()
    assert f"turn 987654321 is not in this database (namespace '{settings.KIMIWEB_NAMESPACE}')" in log
    assert f"run_turn[{result.id}] ignored" in log
    assert f"run_turn[{result.id}] succeeded" not in log
    assert result.state != "SUCCESS"
