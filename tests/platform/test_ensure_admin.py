"""`manage.py ensure_admin` creates the first superuser exactly once."""

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def ensure_admin(credentials_file) -> str:
    out = io.StringIO()
    call_command("ensure_admin", credentials_file=credentials_file, stdout=out)
    return out.getvalue()


def test_takes_the_admin_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADMIN_USERNAME", "root-of-trust")
    monkeypatch.setenv("ADMIN_PASSWORD", "a-given-admin-passphrase")
    monkeypatch.setenv("ADMIN_EMAIL", "ops@example.org")
    output = ensure_admin(tmp_path / "admin-credentials.txt")
    admin = get_user_model().objects.get(username="root-of-trust")
    assert admin.is_superuser and admin.is_staff
    assert admin.email == "ops@example.org"
    assert admin.check_password("a-given-admin-passphrase")
    assert "a-given-admin-passphrase" not in output
    assert not (tmp_path / "admin-credentials.txt").exists()


def test_generates_a_password_prints_it_once_and_keeps_it_private(monkeypatch, tmp_path):
    for name in ("ADMIN_USERNAME", "ADMIN_PASSWORD", "ADMIN_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    credentials = tmp_path / "var" / "admin-credentials.txt"

    first = ensure_admin(credentials)
    saved = dict(line.split("=", 1) for line in credentials.read_text().splitlines())
    assert saved["username"] == "admin"
    assert len(saved["password"]) >= 20
    assert saved["password"] in first
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert get_user_model().objects.get(username="admin").check_password(saved["password"])

    second = ensure_admin(credentials)
    assert saved["password"] not in second
    assert "exists" in second
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_does_nothing_when_a_superuser_exists(django_user_model, monkeypatch, tmp_path):
    django_user_model.objects.create_superuser("first", "", "first-admin-passphrase")
    monkeypatch.setenv("ADMIN_USERNAME", "second")
    ensure_admin(tmp_path / "c.txt")
    assert not django_user_model.objects.filter(username="second").exists()


def test_never_takes_over_an_ordinary_account(make_user, monkeypatch, tmp_path):
    make_user("admin")
    monkeypatch.delenv("ADMIN_USERNAME", raising=False)
    with pytest.raises(CommandError, match="ADMIN_USERNAME"):
        ensure_admin(tmp_path / "c.txt")
    assert not get_user_model().objects.get(username="admin").is_superuser
