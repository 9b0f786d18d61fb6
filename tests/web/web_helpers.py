"""Helpers for the live-site tests: log in and post like a browser, read the console e-mail."""

from __future__ import annotations

import re
import socket

import httpx

PASSWORD = "a-long-test-passphrase-42"


def network_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None on a loopback-only machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def csrf_post(client: httpx.Client, path: str, data: dict | str, form_page: str | None = None, **kwargs):
    """POST like a browser: fetch the form page first (for the CSRF cookie), send its token back."""
    client.get(form_page or path)
    token = client.cookies.get("csrftoken")
    headers = {"X-CSRFToken": token, "Referer": str(client.base_url) + path, **kwargs.pop("headers", {})}
    if isinstance(data, str):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return client.post(path, content=data, headers=headers, **kwargs)
    return client.post(path, data=data, headers=headers, **kwargs)


def log_in(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return csrf_post(client, "/accounts/login/", {"username": username, "password": password})


def reset_link(log: str) -> str:
    """The password-reset link from the last e-mail the console backend printed."""
    links = re.findall(r"https?://\S+/accounts/password/reset/[^/\s]+/[^/\s]+/", log)
    assert links, log[-3000:]
    return links[-1]
