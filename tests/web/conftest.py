"""A live Daphne for the hostile-input tests: the test database, this run's Redis, DEBUG on as `make run`.

Daphne listens on every address, so a test can reach it from this machine's own non-loopback address
and see what a client on the network sees. Tests write with autocommit (`web_db`) so Daphne sees it.
Small limits (lock-out, sign-ups, turns per address, queue depth) make the throttles reachable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from web_helpers import network_address

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {
    "LOGIN_FAILURE_LIMIT": "3",
    "LOGIN_LOCKOUT_MINUTES": "0.05",  # 3 s
    "SIGNUP_RATE": "2/h",
    "LOGIN_RATE": "1000/m",  # these tests log in often from one address; the in-process tests check it
    "CHAT_TURNS_PER_MINUTE": "100",
    "CHAT_TURNS_PER_MINUTE_PER_IP": "3",
    "CHAT_MAX_QUEUED_TURNS": "4",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def web_db(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield connection.settings_dict["NAME"]


class LiveSite:
    def __init__(self, port: int, log_path: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def site(web_db, tmp_path_factory):
    """Daphne on a free port on every address; `site.log()` is its output (console e-mails land there)."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{web_db}"
    own = network_address()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DEBUG": "true",
        "DB_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
        "ALLOWED_HOSTS": ",".join(["127.0.0.1", "localhost", *([own] if own else [])]),
        **LIMITS,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "0.0.0.0", "-p", str(port), "kimiweb.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    live = LiveSite(port, log_path)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(live.url + "/accounts/login/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("daphne did not start:\n" + live.log()[-4000:])
        time.sleep(0.2)
    yield live
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def db_write(web_db, transactional_db):
    """Write to the test database from a test (autocommit, so Daphne sees it at once)."""
    yield


@pytest.fixture
def browser_like(site):
    """A function giving a fresh httpx client on the live site (its own cookie jar)."""
    clients = []

    def make(base_url: str | None = None) -> httpx.Client:
        client = httpx.Client(base_url=base_url or site.url, timeout=30, follow_redirects=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium through Playwright (never `playwright install`). Module-scoped: one sync
    Playwright per thread at a time, and tests/browser/ starts its own for the session."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()
