"""The admin console is for staff only: anonymous visitors and plain users are sent to the log-in page."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

CONSOLE_PAGES = [
    ("admin:index", ()),
    ("admin:chat_dashboard", ()),
    ("admin:chat_turn_changelist", ()),
    ("admin:chat_conversation_changelist", ()),
    ("admin:chat_toolcall_changelist", ()),
    ("admin:chat_step_changelist", ()),
    ("admin:corpus_document_changelist", ()),
    ("admin:corpus_document_import", ()),
    ("admin:auth_user_changelist", ()),
]


def _assert_sent_to_login(response, url):
    assert response.status_code == 302, url
    assert response["Location"].startswith(reverse("admin:login")), response["Location"]


@pytest.mark.parametrize("name,args", CONSOLE_PAGES)
def test_anonymous_visitor_is_sent_to_the_admin_login(client, name, args):
    url = reverse(name, args=args)
    _assert_sent_to_login(client.get(url), url)


@pytest.mark.parametrize("name,args", CONSOLE_PAGES)
def test_signed_in_non_staff_user_is_sent_to_the_admin_login(client, plain_user, name, args):
    client.force_login(plain_user)
    url = reverse(name, args=args)
    _assert_sent_to_login(client.get(url), url)


def test_turn_pages_and_operator_buttons_refuse_non_staff(client, plain_user, turn_factory):
    turn = turn_factory(plain_user, status="running")
    client.force_login(plain_user)
    for url in (
        reverse("admin:chat_turn_change", args=[turn.pk]),
        reverse("admin:chat_turn_cancel", args=[turn.pk]),
        reverse("admin:chat_turn_rerun", args=[turn.pk]),
    ):
        _assert_sent_to_login(client.post(url), url)


def test_staff_member_without_permissions_cannot_open_the_dashboard(client):
    clerk = get_user_model().objects.create_user("clerk", password="s3cret-pass-123", is_staff=True)
    client.force_login(clerk)
    assert client.get(reverse("admin:chat_dashboard")).status_code == 403
    assert client.get(reverse("admin:corpus_document_import")).status_code == 403


def test_staff_member_sees_the_console_and_a_dashboard_link_on_the_index(staff_client):
    response = staff_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert reverse("admin:chat_dashboard") in response.content.decode()
