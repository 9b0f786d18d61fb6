"""Accounts against the live Daphne: log-in lock-out that expires, sign-ups limited per address,
password change, and password reset by e-mail (the console backend prints it to Daphne's log)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from web_helpers import PASSWORD, csrf_post, log_in, reset_link

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(db_write):
    return get_user_model().objects.create_user("ada", email="ada@example.org", password=PASSWORD)


def test_wrong_passwords_lock_the_account_out_for_a_while_with_a_clear_message(site, browser_like, ada):
    client = browser_like()
    for _ in range(3):  # LOGIN_FAILURE_LIMIT in the live site's settings
        last = log_in(client, "ada", "not-the-password")
    assert last.status_code == 429
    refused = log_in(browser_like(), "ada", PASSWORD)
    assert refused.status_code == 429
    assert "Too many wrong passwords" in refused.text and "Log-in is paused" in refused.text
    assert "_auth_user_id" not in refused.text
    time.sleep(3.5)  # LOGIN_LOCKOUT_MINUTES=0.05
    assert log_in(browser_like(), "ada", PASSWORD).status_code == 302


def test_sign_ups_are_limited_per_address(site, browser_like, db_write):
    def sign_up(name):
        return csrf_post(
            browser_like(),
            "/accounts/signup/",
            {"username": name, "password1": PASSWORD, "password2": PASSWORD},
        )

    assert sign_up("first").status_code == 302
    assert sign_up("second").status_code == 302  # SIGNUP_RATE=2/h
    third = sign_up("third")
    assert third.status_code == 429
    assert "Too many sign-ups from your address" in third.text
    assert not get_user_model().objects.filter(username="third").exists()


def test_a_logged_in_user_changes_the_password(site, browser_like, ada):
    client = browser_like()
    assert log_in(client, "ada").status_code == 302
    new = "another-long-passphrase-77"
    done = csrf_post(
        client,
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert done.status_code == 302 and done.headers["location"] == "/accounts/password/done/"
    assert "Your password is changed" in client.get("/accounts/password/done/").text
    assert log_in(browser_like(), "ada", PASSWORD).status_code == 200  # the old one no longer works
    assert log_in(browser_like(), "ada", new).status_code == 302


def test_password_reset_by_e_mail_sets_a_new_password(site, browser_like, ada):
    client = browser_like()
    sent = csrf_post(client, "/accounts/password/reset/", {"email": "ada@example.org"})
    assert sent.status_code == 302 and sent.headers["location"] == "/accounts/password/reset/sent/"
    deadline = time.monotonic() + 10
    while "Reset your kimiweb password" not in site.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    link = reset_link(site.log())
    form = client.get(link)
    assert form.status_code == 302  # Django moves the token into the session, then shows the form
    new = "a-reset-passphrase-2026"
    done = csrf_post(client, form.headers["location"], {"new_password1": new, "new_password2": new})
    assert done.status_code == 302 and done.headers["location"] == "/accounts/password/reset/complete/"
    assert log_in(browser_like(), "ada", new).status_code == 302
    assert client.get(link).status_code == 200  # used once: the page says the link is invalid
    assert "invalid or was already used" in client.get(link, follow_redirects=True).text
