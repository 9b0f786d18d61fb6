"""The `make run` launcher: hooks of other packages run only once they exist; a busy port is said in words."""

import os
import socket
import subprocess
import sys

from django.conf import settings

from kimiweb import stack


def test_a_hook_runs_only_when_python_dash_m_has_something_to_run():
    assert stack.module_runnable("kimiweb.services")  # a module
    assert not stack.module_runnable("kimiweb")  # a package without __main__
    assert not stack.module_runnable("inference.no_such_hook")


def test_a_missing_django_command_is_skipped_not_failed():
    assert stack.django_command_exists("ensure_admin")
    assert not stack.django_command_exists("no_such_command")


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
            [sys.executable, "-m", "kimiweb.stack", "run", "--var-dir", str(tmp_path)],
            cwd=settings.BASE_DIR,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"PORT={port} (web) is in use; set PORT to a free port" in done.stdout
    assert not (tmp_path / "services.env").exists()  # nothing was started
