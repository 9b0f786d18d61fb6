"""Hostile text and error pages against the live Daphne (DEBUG on, as under `make run`).

NUL and text that is not UTF-8 in a path, a query string or a form get a 400 page, never a 500;
clients that are not on this machine never see Django's technical pages.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import include, path
from web_helpers import PASSWORD, csrf_post, log_in, network_address

from chat.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada_client(site, browser_like, db_write):
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    client = browser_like()
    assert log_in(client, "ada").status_code == 302
    client.user = user
    return client


def _is_plain_400(response):
    return (
        response.status_code == 400
        and "Bad request" in response.text
        and "Traceback" not in response.text
        and "Request Method" not in response.text
    )


def test_a_nul_in_a_shared_link_is_a_400_without_logging_in(site, browser_like):
    response = browser_like().get("/s/%00/")
    assert _is_plain_400(response), response.text[:500]


@pytest.mark.parametrize(
    "path", ["/?q=%00", "/conversations/?q=%00", "/conversations/?q=%ED%A0%80", "/c/%ff/"]
)
def test_nul_or_broken_unicode_in_the_address_is_a_400(ada_client, path):
    response = ada_client.get(path)
    assert _is_plain_400(response), response.text[:500]


@pytest.mark.parametrize("title", ["%ED%A0%80", "a%00b", "%C3%28"])  # a lone surrogate, NUL, bad UTF-8
def test_unreadable_text_in_a_form_field_is_a_400(ada_client, title):
    conv = Conversation.objects.create(owner=ada_client.user, title="Before")
    path = f"/c/{conv.uuid}/rename"
    response = csrf_post(ada_client, path, f"title={title}", form_page=f"/c/{conv.uuid}/")
    assert _is_plain_400(response), response.text[:500]
    conv.refresh_from_db()
    assert conv.title == "Before"


def test_a_readable_form_still_goes_through(ada_client):
    conv = Conversation.objects.create(owner=ada_client.user, title="Before")
    path = f"/c/{conv.uuid}/rename"
    response = csrf_post(ada_client, path, "title=Caf%C3%A9+%F0%9F%8C%8A", form_page=f"/c/{conv.uuid}/")
    assert response.status_code == 302
    conv.refresh_from_db()
    assert conv.title == "Café 🌊"


@pytest.fixture
def from_the_network(site, browser_like):
    address = network_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    return browser_like(f"http://{address}:{site.port}")


def test_a_client_on_the_network_gets_the_plain_404_page_not_the_url_list(from_the_network):
    response = from_the_network.get("/no-such-page/")
    assert response.status_code == 404
    assert "Not found" in response.text
    assert "URLconf" not in response.text and "Django tried these URL patterns" not in response.text


def test_a_client_on_the_network_gets_the_plain_404_page_for_a_missing_object(from_the_network):
    response = from_the_network.get("/s/no-such-token/")
    assert response.status_code == 404
    assert "Not found" in response.text and "Raised by" not in response.text


def test_a_client_on_the_network_gets_a_plain_400_for_a_bad_host_not_a_traceback(from_the_network):
    response = from_the_network.get("/accounts/login/", headers={"Host": "evil.example"})
    assert _is_plain_400(response), response.text[:500]
    assert "DisallowedHost" not in response.text and "SECRET_KEY" not in response.text


def test_the_developer_at_the_machine_still_gets_the_debug_page(site, browser_like):
    response = browser_like().get("/accounts/login/", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert "DisallowedHost" in response.text  # DEBUG's technical page, for loopback clients only


def _crash(request):
    raise RuntimeError("a bug with a secret in its message: hunter2")


urlpatterns = [path("crash/", _crash), path("", include("kimiweb.urls"))]


@pytest.mark.parametrize("address,debug_page", [("192.0.2.9", False), ("127.0.0.1", True)])
def test_a_crash_shows_a_traceback_only_to_the_developer_at_the_machine(settings, address, debug_page):
    settings.DEBUG = True
    settings.ROOT_URLCONF = __name__
    client = Client(REMOTE_ADDR=address, raise_request_exception=False)
    response = client.get("/crash/", HTTP_ACCEPT="text/html")
    assert response.status_code == 500
    text = response.content.decode()
    assert ("hunter2" in text) is debug_page
    if not debug_page:
        assert "Something went wrong" in text and "Traceback" not in text
