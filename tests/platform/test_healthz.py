"""/healthz answers 200 when Postgres and Redis answer, and 503 naming the one that does not."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

pytestmark = pytest.mark.django_db


def test_healthz_is_200_when_postgres_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body.pop("sandbox")["state"] in ("ok", "unavailable", "unknown")  # a degraded tool, never a 503
    assert body == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}, "failed": []}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_is_503_naming_redis_when_redis_is_down(client, settings, free_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failed"] == ["redis"]
    assert body["checks"]["postgres"] == "ok"
    assert "ConnectionError" in body["checks"]["redis"]


def test_healthz_is_503_naming_both_when_nothing_answers(free_port):
    # A separate process, because this one's database connection is the test database.
    probe = (
        "import django, json; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz'); print(json.dumps({'code': r.status_code, 'body': r.json()}))"
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="kimiweb.settings",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/kimiweb",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["code"] == 503
    assert answer["body"]["failed"] == ["postgres", "redis"]
    assert "OperationalError" in answer["body"]["checks"]["postgres"]


def test_healthz_refuses_writes(client):
    assert client.post("/healthz").status_code == 405
