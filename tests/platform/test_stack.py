"""The `make run` launcher: every set-up step runs (a failing one stops the start); a busy port is said in words."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from django.conf import settings

from devstack import services, stack


def test_setup_runs_every_step_and_a_failing_one_stops_it(monkeypatch):
    ran = []

    def fail_on_import(*args):
        ran.append(args)
        if args[0] == "import_documents":
            raise subprocess.CalledProcessError(1, ["manage.py", *args])

    monkeypatch.setattr(stack, "manage", fail_on_import)
    with pytest.raises(subprocess.CalledProcessError):
        stack.setup()
    assert [a[0] for a in ran] == ["migrate", "ensure_admin", "collectstatic", "import_documents"]


def test_run_starts_the_inference_server_with_web_and_both_workers():
    assert stack.PROCESS_NAMES == ["web", "worker", "extractor", "inference"]
    procfile = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in stack.PROCFILE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert set(stack.PROCESS_NAMES) <= set(procfile)
    assert "-Q agent " in procfile["worker"] and "-Q documents " in procfile["extractor"]


def test_the_children_find_the_venv_programs_and_talk_to_the_local_inference_port(monkeypatch):
    monkeypatch.setenv("INFERENCE_PORT", "31234")
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    env = stack.child_env()
    assert env["PATH"].split(os.pathsep)[0] == str(stack.BIN_DIR)
    assert env["LLM_BASE_URL"] == "http://127.0.0.1:31234/v1"
    monkeypatch.setenv("LLM_BASE_URL", "https://api.example.org/v1")
    assert stack.child_env()["LLM_BASE_URL"] == "https://api.example.org/v1"


def test_run_refuses_a_busy_web_port_before_starting_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "devstack.stack", "run", "--var-dir", str(tmp_path)],
            cwd=settings.BASE_DIR,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"PORT={port} (web) is in use; set PORT to a free port" in done.stdout
    assert not (tmp_path / "services.env").exists()  # nothing was started


def test_a_port_left_in_time_wait_counts_as_free(free_port):
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first keeps the port in TIME_WAIT
        client.close()
    assert services.port_is_free(port)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not services.port_is_free(port)  # a listener does make it busy


SUPERVISED_SERVICES = """
import sys
from pathlib import Path
from devstack import services, stack
from devstack.supervisor import Supervisor
var, pg_port, redis_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
services.EmbeddedPostgres(var).start(pg_port)
services.EmbeddedRedis(var).start(redis_port)
sys.exit(Supervisor(stack.embedded_programs(var, ["postgres", "redis"]), stop_timeout=10).run())
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_embedded_postgres_and_redis_run_supervised_restart_on_their_port_and_stop_with_ctrl_c(
    tmp_path, free_port
):
    import psycopg
    import redis

    pg_port, redis_port = free_port(), free_port()
    log = (tmp_path / "services.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED_SERVICES, str(tmp_path), str(pg_port), str(redis_port)],
        cwd=settings.BASE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pg_url = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    def wait_up(what: str, count: int) -> None:
        deadline = time.monotonic() + 90
        while (tmp_path / "services.log").read_text().count(f"{what} started (pid") < count or not (
            services.postgres_answers(pg_url, timeout=1) and services.redis_answers(redis_url, 1)
        ):
            assert run.poll() is None, (tmp_path / "services.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "services.log").read_text()
            time.sleep(0.2)

    try:
        wait_up("postgres", 1)
        postmaster = int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        wait_up("postgres", 2)  # back on the same port
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        redis_pid = redis.Redis.from_url(redis_url).info()["process_id"]
        os.kill(redis_pid, signal.SIGKILL)
        wait_up("redis", 2)
        everything = [run.pid, *(p.pid for p in psutil.Process(run.pid).children(recursive=True))]
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        assert run.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        while any(psutil.pid_exists(p) for p in everything) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not services.postgres_answers(pg_url, timeout=1)
        assert not services.redis_answers(redis_url, 1)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()
