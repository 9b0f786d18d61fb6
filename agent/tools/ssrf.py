"""The SSRF guard for `browse`: a URL may only reach globally routable addresses.

Resolve once, check every address, then connect to the checked address (never re-resolve), and
check again at each redirect. Literal forms like `0x7f000001` go through the same resolver, which
turns them into the address they really mean.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from .base import ToolError

Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses as strings

NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in net for net in NAT64) or ip.teredo is not None:
            return False
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    return ip.is_global and not ip.is_multicast


def check_url(url: str, resolver: Resolver = system_resolver) -> tuple[str, str, int, str]:
    """Return (scheme, host, port, address) for a URL that may be fetched, or raise ToolError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be opened, not {parts.scheme or 'a bare path'!r}")
    host = parts.hostname
    if not host:
        raise ToolError("the URL has no host")
    if parts.username or parts.password:
        raise ToolError("URLs with credentials are not opened")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ToolError(f"bad port in URL: {exc}") from exc
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise ToolError(f"could not resolve {host}: {exc}") from exc
    if not addresses:
        raise ToolError(f"{host} has no addresses")
    for address in addresses:
        try:
            public = address_is_public(address)
        except ValueError as exc:
            raise ToolError(f"{host} resolved to an unusable address {address!r}") from exc
        if not public:
            raise ToolError(f"refused: {host} resolves to a private or reserved address ({address})")
    return parts.scheme, host, port, addresses[0]
