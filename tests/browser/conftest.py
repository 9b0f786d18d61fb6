"""A live web stack for browser tests: Daphne serving the test database, and Debian's Chromium.

pytest-django's live_server is WSGI-only, so Daphne runs as a subprocess with DATABASE_URL pointing
at the test database pytest-django created; test data is written with autocommit (no wrapping
transaction: tests are marked `django_db(transaction=True)`) so Daphne sees it. Never `playwright install`: we drive /usr/bin/chromium.
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

# Playwright's sync API runs an event loop in the test thread; the ORM calls here are plain blocking
# calls on a test database, which is what Django's guard is about to refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chat"))

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a-long-test-passphrase-42"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(db_name: str) -> dict:
    """The environment every process of the test stack shares: the test database, the same Redis."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db_name}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "KIMIWEB_NAMESPACE": settings.KIMIWEB_NAMESPACE,  # this run's queue, streams and groups
        "DEBUG": "true",
        "DB_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def stack_db(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield connection.settings_dict["NAME"]


@pytest.fixture(scope="session")
def live_url(stack_db, tmp_path_factory):
    """Daphne on a free port, serving the test database; its log is printed if it fails to start."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "kimiweb.asgi:application"],
        cwd=ROOT,
        env=stack_env(stack_db),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/accounts/login/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("daphne did not start:\n" + log_path.read_text()[-4000:])
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def db_write(stack_db, transactional_db):
    """Write to the test database from a test (autocommit, so Daphne sees it at once)."""
    yield


@pytest.fixture
def page_errors():
    return []


@pytest.fixture
def new_page(browser, page_errors):
    """A fresh browser context per page; JS errors and CSP violations are collected in page_errors."""
    contexts = []

    def make(**kwargs):
        context = browser.new_context(**kwargs)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: page_errors.append(msg.text) if msg.type == "error" else None,
        )
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def user(db_write):
    from django.contrib.auth import get_user_model

    count = get_user_model().objects.count()
    return get_user_model().objects.create_user(
        username=f"user{count}_{time.monotonic_ns()}", password=PASSWORD
    )


def log_in(page, live_url, user):
    page.goto(live_url + "/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_url + "/")
