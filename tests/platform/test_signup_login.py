"""Accounts: sign up (with Django's password validation), log in, log out."""

import secrets

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    """A client from an address of its own: sign-ups are counted per address in Redis, across runs."""
    return Client(
        REMOTE_ADDR=f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    )


def test_login_page_renders_a_labelled_form(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert reverse("signup") in html


def test_signup_creates_the_account_and_logs_in(client):
    response = client.post(
        reverse("signup"),
        {"username": "grace", "password1": "orbital-mechanics-1906", "password2": "orbital-mechanics-1906"},
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(username="grace")
    assert not user.is_staff
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.parametrize(
    "password,complaint",
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("8675309123456", "entirely numeric"),
    ],
)
def test_signup_rejects_weak_passwords_with_the_validators_message(client, password, complaint):
    response = client.post(
        reverse("signup"), {"username": "weak", "password1": password, "password2": password}
    )
    assert response.status_code == 400
    assert complaint in response.content.decode()
    assert not get_user_model().objects.filter(username="weak").exists()


def test_signup_rejects_mismatched_passwords(client):
    response = client.post(
        reverse("signup"),
        {"username": "typo", "password1": "orbital-mechanics-1906", "password2": "orbital-mech"},
    )
    assert response.status_code == 400
    assert "didn’t match" in response.content.decode()


def test_signup_can_be_closed(client, settings):
    settings.SIGNUP_ENABLED = False
    assert client.get(reverse("signup")).status_code == 404
    assert reverse("signup") not in client.get(reverse("login")).content.decode()


def test_login_with_the_right_password_and_not_with_a_wrong_one(client, make_user):
    make_user("ada")
    wrong = client.post(reverse("login"), {"username": "ada", "password": "not-it"})
    assert wrong.status_code == 200
    assert "enter a correct username and password" in wrong.content.decode()
    right = client.post(reverse("login"), {"username": "ada", "password": make_user.password})
    assert right.status_code == 302
    assert "_auth_user_id" in client.session


def test_logout_needs_a_post_so_a_link_cannot_sign_anyone_out(client, make_user):
    client.force_login(make_user("ada"))
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_the_login_page_offers_a_password_reset(client):
    assert reverse("password_reset") in client.get(reverse("login")).content.decode()


def test_password_change_needs_a_login(client):
    response = client.get(reverse("password_change"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_log_in_attempts_from_one_address_are_limited_whatever_the_usernames(client, settings, make_user):
    settings.LOGIN_RATE = "4/m"
    make_user("ada")
    for n in range(4):
        assert client.post(reverse("login"), {"username": f"guess{n}", "password": "x"}).status_code == 200
    refused = client.post(reverse("login"), {"username": "ada", "password": make_user.password})
    assert refused.status_code == 429
    assert "Too many log-in attempts from your address" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_chat_page_links_to_the_password_change(client, make_user):
    user = make_user("grace")
    client.force_login(user)
    page = client.get("/").content.decode()
    assert f'href="{reverse("password_change")}"' in page
