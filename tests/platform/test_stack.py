"""The `make run` launcher: every set-up step runs (a failing one stops the start); a busy port is said in words."""

import os
import socket
import subprocess
import sys

import pytest
from django.conf import settings

from devstack import stack


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


def test_run_starts_the_inference_server_with_web_and_worker():
    assert stack.PROCESS_NAMES == ["web", "worker", "inference"]


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
