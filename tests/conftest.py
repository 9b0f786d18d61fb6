"""Fixtures any test folder may use; a folder's own fixtures live in that folder's conftest.py."""

import contextlib
import os
import re
import socket

import pytest

PASSWORD = "a-long-test-passphrase-42"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Give each test run its own test database, and close connections after each use.

    Several runs may share one Postgres (people, CI jobs), so `test_kimiweb_<pid>`, not `test_kimiweb`.
    Persistent connections held by Channels' and Celery's worker threads would keep the test database
    from being dropped at the end, hence CONN_MAX_AGE=0.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    database["CONN_MAX_AGE"] = 0
    test = database.setdefault("TEST", {})
    base = test.get("NAME") or "test_" + database["NAME"]
    test["NAME"] = f"{base}_{os.getpid()}"
    _drop_test_databases_of_dead_runs(database, base)


def _drop_test_databases_of_dead_runs(database: dict, base: str) -> None:
    """A run that was killed leaves `<base>_<pid>` behind; drop those whose process is gone (local server only)."""
    if database.get("HOST") not in ("127.0.0.1", "localhost", "::1", ""):
        return
    import psycopg

    params = {"host": database.get("HOST") or None, "port": database.get("PORT") or None}
    params |= {"user": database.get("USER") or None, "password": database.get("PASSWORD") or None}
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)$")
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **params) as conn:
            for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
                found = pattern.match(name)
                if found and not _pid_alive(int(found.group(1))):
                    with contextlib.suppress(psycopg.Error):  # in use after all: leave it
                        conn.execute(f'DROP DATABASE "{name}"')
    except psycopg.Error:
        pass  # housekeeping only; pytest-django reports a real connection problem itself


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def free_port():
    """A function returning a TCP port on 127.0.0.1 that nothing listens on right now."""

    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick


@pytest.fixture
def make_user(db, django_user_model):
    """A function creating a user with the given name; each has the password `make_user.password`."""

    def create(username: str, **fields):
        return django_user_model.objects.create_user(username=username, password=PASSWORD, **fields)

    create.password = PASSWORD
    return create


def pytest_collection_modifyitems(config, items):
    """Run the browser tests last.

    Playwright's sync API keeps an event loop running in the main thread for as long as its
    session-scoped browser lives; async tests collected after it (Channels consumers, the agent's
    publisher) would then fail with "cannot be called from a running event loop".
    """
    items.sort(key=lambda item: "browser" in item.path.parts)
