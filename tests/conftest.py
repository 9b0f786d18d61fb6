"""Fixtures any test folder may use; a folder's own fixtures live in that folder's conftest.py."""

import contextlib
import os
import re
import socket

import pytest

from devstack.services import pid_alive

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
    base, name = _test_database_names(database)
    database.setdefault("TEST", {})["NAME"] = name
    _drop_test_databases_of_dead_runs(database, base)


def _test_database_names(database: dict) -> tuple[str, str]:
    """(the base name, this run's database name `<base>_<pid>`)."""
    base = database.get("TEST", {}).get("NAME") or "test_" + database["NAME"]
    base = base.rsplit(f"_{os.getpid()}", 1)[0]
    return base, f"{base}_{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def _run_namespace():
    """This run's own namespace (its database's name, as a deployment derives it): queues, streams,
    groups, cancel flags and cache keys of a `make run` or another run on the same Redis stay apart.

    Django settings are loaded before any conftest, so the namespaced settings are set here again,
    before the first channel layer, cache or broker connection is made; workers and stacks a test
    starts get `KIMIWEB_NAMESPACE` from `settings.KIMIWEB_NAMESPACE`.
    """
    from channels.layers import channel_layers
    from django.conf import settings

    from kimiweb.celery import app

    namespace = re.sub(r"[^A-Za-z0-9_.-]", "_", _test_database_names(settings.DATABASES["default"])[1])[:40]
    settings.KIMIWEB_NAMESPACE = namespace
    os.environ["KIMIWEB_NAMESPACE"] = namespace
    for layer in settings.CHANNEL_LAYERS.values():
        layer.setdefault("CONFIG", {})["prefix"] = f"{namespace}:asgi"
    channel_layers.backends.clear()
    settings.CACHES["default"]["KEY_PREFIX"] = namespace
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "global_keyprefix": f"{namespace}:",
    }
    app.conf.result_backend_transport_options = {"global_keyprefix": f"{namespace}:"}
    yield namespace


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
                if found and not pid_alive(int(found.group(1))):
                    with contextlib.suppress(psycopg.Error):  # in use after all: leave it
                        conn.execute(f'DROP DATABASE "{name}"')
    except psycopg.Error:
        pass  # housekeeping only; pytest-django reports a real connection problem itself


@pytest.fixture(autouse=True)
def _root_logger_level_restored():
    """An in-process Celery worker (celery.contrib.testing's start_worker, loglevel "error") sets the root
    logger to ERROR for the rest of the session, and `caplog` in later tests then saw no warning."""
    import logging

    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


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
