"""Fixtures any test folder may use; a folder's own fixtures live in that folder's conftest.py."""

import os
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
    test["NAME"] = f"{test.get('NAME') or 'test_' + database['NAME']}_{os.getpid()}"


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
