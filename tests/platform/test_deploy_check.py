"""Production-safe mode: DEBUG=false with a real SECRET_KEY and ALLOWED_HOSTS passes `manage.py check --deploy`."""

import json
import os
import secrets
import subprocess
import sys

from django.conf import settings


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # DJANGO_ALLOW_ASYNC_UNSAFE is the browser tests' (Playwright's loop shares their thread); a
    # deployment never sets it, and the deploy check rightly fails where it is set.
    unset = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in unset}
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


def test_in_production_mode_health_probes_over_plain_http_are_answered_and_pages_redirect_to_https():
    probe = (
        "import django, json; django.setup(); from django.test import Client; c = Client(HTTP_HOST='chat.example.org'); "
        "h = c.get('/healthz'); p = c.get('/accounts/login/'); "
        "print(json.dumps([h.status_code, p.status_code, p.get('Location', '')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "kimiweb.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "chat.example.org",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    health, page, location = json.loads(done.stdout.strip().splitlines()[-1])
    assert health == 200
    assert page == 301 and location == "https://chat.example.org/accounts/login/"


def _key_of_a_fresh_process(key_file, **env) -> subprocess.CompletedProcess:
    probe = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.Popen(
        [sys.executable, "-c", probe],
        cwd=settings.BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "kimiweb.settings", "SECRET_KEY_FILE": str(key_file), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_signing_key_ships_with_the_code():
    source = (settings.BASE_DIR / "kimiweb" / "settings.py").read_text()
    assert "dev-insecure" not in source and "insecure" not in source.lower()


def test_a_development_install_generates_its_own_key_once_into_a_private_file(tmp_path):
    key_file = tmp_path / "var" / "secret_key"
    # Four processes starting at once (web, worker, manage.py ...) must agree on one key.
    starts = [_key_of_a_fresh_process(key_file) for _ in range(4)]
    keys = {proc.communicate(timeout=120)[0].strip().splitlines()[-1] for proc in starts}
    assert len(keys) == 1
    (key,) = keys
    assert len(key) >= 50 and key_file.read_text().strip() == key
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = _key_of_a_fresh_process(key_file).communicate(timeout=120)[0].strip().splitlines()[-1]
    assert again == key
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["secret_key"]  # no drafts left behind


def test_a_key_from_the_environment_wins_and_no_file_is_written(tmp_path):
    key_file = tmp_path / "secret_key"
    out = _key_of_a_fresh_process(key_file, SECRET_KEY="from-the-environment-" + "x" * 40).communicate(
        timeout=120
    )
    assert out[0].strip().splitlines()[-1] == "from-the-environment-" + "x" * 40
    assert not key_file.exists()
