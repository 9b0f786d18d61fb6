"""`python -m devstack.services up`: use the Postgres and Redis that answer, else start embedded ones under var/."""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest
import redis
from django.conf import settings

from devstack import services

BASE_DIR = Path(settings.BASE_DIR)


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


@pytest.fixture
def var_dir():
    # Under /tmp, not pytest's tmp_path: the embedded Postgres runs as another user, who must reach it.
    path = Path(tempfile.mkdtemp(prefix="kimiweb-var-"))
    yield path
    services.down(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def answering_database_url():
    """The configured Postgres, with a database name nobody uses yet (dropped afterwards)."""
    configured = os.environ.get("DATABASE_URL") or services.DEFAULT_DATABASE_URL
    name = f"kimiweb_services_{uuid.uuid4().hex[:8]}"
    url = urlsplit(configured)._replace(path=f"/{name}").geturl()
    yield url
    with psycopg.connect(urlsplit(configured)._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_services_that_answer_are_used_and_a_missing_database_is_created(var_dir, answering_database_url):
    redis_url = os.environ.get("REDIS_URL") or services.DEFAULT_REDIS_URL
    found = services.up(var_dir, {"DATABASE_URL": answering_database_url, "REDIS_URL": redis_url})
    assert found.started == []
    assert found.database_url == answering_database_url
    assert found.redis_url == redis_url
    psycopg.connect(answering_database_url).close()  # created
    assert env_file(var_dir / "services.env") == {
        "DATABASE_URL": answering_database_url,
        "REDIS_URL": redis_url,
    }
    assert not (var_dir / "postgres").exists() and not (var_dir / "redis").exists()


def test_a_server_that_refuses_us_is_reported_not_replaced_by_an_empty_embedded_one(var_dir):
    configured = urlsplit(os.environ.get("DATABASE_URL") or services.DEFAULT_DATABASE_URL)
    wrong_role = configured._replace(
        netloc=f"no_such_role:pw@{configured.hostname}:{configured.port or 5432}"
    )
    with pytest.raises(services.ServiceError, match="no_such_role"):
        services.up(var_dir, {"DATABASE_URL": wrong_role.geturl(), "REDIS_URL": services.DEFAULT_REDIS_URL})
    assert not (var_dir / "postgres").exists()


def test_nothing_answers_on_a_closed_port(free_port):
    assert not services.postgres_answers(f"postgres://postgres@127.0.0.1:{free_port()}/kimiweb", timeout=1)
    assert not services.redis_answers(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)


@pytest.mark.slow
def test_with_nothing_answering_embedded_postgres_and_redis_start_and_migrations_run(var_dir, free_port):
    pg_port, redis_port = free_port(), free_port()
    closed = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/kimiweb",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/2",
    }
    up = run_module("-m", "devstack.services", "up", "--var-dir", str(var_dir), **closed)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "starting embedded PostgreSQL 16" in up.stdout
    assert "starting embedded Redis 6.2" in up.stdout

    # The closed local ports were free, so the embedded services took them: the configured URLs now work.
    assert env_file(var_dir / "services.env") == closed
    with psycopg.connect(closed["DATABASE_URL"]) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("16.")
    assert redis.Redis.from_url(closed["REDIS_URL"]).info("server")["redis_version"].startswith("6.2")
    assert services.status(var_dir) == {"postgres": pg_port, "redis": redis_port}

    migrate = run_module("manage.py", "migrate", "--noinput", **closed)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    with psycopg.connect(closed["DATABASE_URL"]) as conn:
        applied = conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'chat'").fetchone()[0]
    assert applied >= 1

    # A second `up` finds them running and starts nothing new.
    again = run_module("-m", "devstack.services", "up", "--var-dir", str(var_dir), **closed)
    assert again.returncode == 0, again.stderr
    assert "starting embedded" not in again.stdout
    assert env_file(var_dir / "services.env") == closed

    pids = _server_pids(var_dir)
    assert pids
    down = run_module("-m", "devstack.services", "down", "--var-dir", str(var_dir))
    assert down.returncode == 0, down.stderr
    assert services.status(var_dir) == {"postgres": None, "redis": None}
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def _server_pids(var_dir: Path) -> list[int]:
    marker = str(var_dir)
    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if any(marker in part for part in (proc.info["cmdline"] or []))
    ]
