"""Production-safe mode: DEBUG=false with a real SECRET_KEY and ALLOWED_HOSTS passes `manage.py check --deploy`."""

import os
import secrets
import subprocess
import sys

from django.conf import settings


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check_without_a_single_warning():
    done = manage(
        "check",
        "--deploy",
        "--fail-level",
        "DEBUG",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="chat.example.org",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def test_the_development_defaults_are_flagged_by_the_deploy_check():
    done = manage("check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    assert "security.W018" in done.stderr  # DEBUG on


def test_production_mode_refuses_to_start_without_a_secret_key():
    done = manage("check", DEBUG="false", ALLOWED_HOSTS="chat.example.org")
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr
