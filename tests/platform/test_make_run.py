"""`make run` end to end: the stack comes up on free ports, serves /healthz, the log-in page and the admin
console, and Ctrl-C stops every process it started."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from django.conf import settings

from devstack import services

BASE_DIR = Path(settings.BASE_DIR)
ADMIN = {"ADMIN_USERNAME": "smoke-admin", "ADMIN_PASSWORD": "smoke-admin-passphrase-123"}


@pytest.fixture
def smoke_database_url():
    """A database of its own on the configured Postgres, so its migrations touch nobody's data.

    It is kept between runs: set-up is idempotent, and the default corpus takes minutes to import once.
    """
    configured = os.environ.get("DATABASE_URL") or services.DEFAULT_DATABASE_URL
    return urlsplit(configured)._replace(path="/kimiweb_smoke").geturl()


def wait_for_health(base_url: str, make: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert make.poll() is None, f"make run exited early ({make.returncode}):\n{log.read_text()[-5000:]}"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/healthz never answered 200:\n{log.read_text()[-5000:]}")


def alive(pids) -> list[int]:
    return [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_make_run_serves_the_app_and_ctrl_c_leaves_no_process_behind(free_port, smoke_database_url, tmp_path):
    port, inference_port = free_port(), free_port()
    redis_url = (
        urlsplit(os.environ.get("REDIS_URL") or services.DEFAULT_REDIS_URL)._replace(path="/13").geturl()
    )
    env = {
        **os.environ,
        **ADMIN,
        "PORT": str(port),
        "INFERENCE_PORT": str(inference_port),
        "DATABASE_URL": smoke_database_url,
        "REDIS_URL": redis_url,  # a Redis database of its own: its worker must not take others' tasks
    }
    log = tmp_path / "make-run.log"
    base_url = f"http://127.0.0.1:{port}"
    # `-o` keeps make from reinstalling the venv here even if the stamp is stale; `make test` did that.
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "-o", ".venv/.installed", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    try:
        wait_for_health(base_url, make, log)
        started = [p.pid for p in psutil.Process(make.pid).children(recursive=True)]
        assert len(started) >= 4  # the launcher (the supervisor), web, worker and its pool, inference

        health = httpx.get(f"{base_url}/healthz").json()
        assert health["status"] == "ok"

        login_page = httpx.get(f"{base_url}/accounts/login/")
        assert login_page.status_code == 200
        assert '<label for="id_username">Username</label>' in login_page.text

        with httpx.Client(base_url=base_url, follow_redirects=True) as browser:
            form = browser.get("/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            console = browser.post(
                "/admin/login/?next=/admin/",
                data={
                    "csrfmiddlewaretoken": token,
                    "username": ADMIN["ADMIN_USERNAME"],
                    "password": ADMIN["ADMIN_PASSWORD"],
                },
            )
            assert console.status_code == 200
            assert str(console.url).endswith("/admin/")
            assert "Log out" in console.text or "logout" in console.text

        banner = f"kimiweb is up:   {base_url}/"
        deadline = time.monotonic() + 10  # printed by the launcher once it sees /healthz answer
        while banner not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert banner in log.read_text()
        assert f"admin console:   {base_url}/admin/" in log.read_text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise

    deadline = time.monotonic() + 15
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(started) == [], f"orphans: {[psutil.Process(p).cmdline() for p in alive(started)]}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/healthz", timeout=2)
