"""Middleware for hostile input and safe defaults: the Content-Security-Policy, a 400 for unreadable
text, error pages without tracebacks for remote clients, and the WebSocket same-origin check.

Content-Security-Policy for every response: scripts only from our own origin, never inline.

Inline `style` attributes stay allowed (KaTeX positions glyphs with them); everything the model or a
user wrote is sanitized before it becomes HTML, and this header is the second line of defence.
"""

from urllib.parse import unquote_to_bytes, urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve
from django.views.debug import ExceptionReporter

DEFAULT_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_POLICY)
        if getattr(settings, "ARTIFACT_ORIGIN", ""):
            # Artifact frames load from their own origin (chat/artifacts.py); nothing else changes.
            self.policy += f"; frame-src 'self' {settings.ARTIFACT_ORIGIN}"

    def __call__(self, request):
        response = self.get_response(request)
        # The admin console may set its own; never overwrite a stricter per-view policy.
        response.headers.setdefault("Content-Security-Policy", self.policy)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


# -- hostile text ---------------------------------------------------------------------------------


def _readable(raw: bytes) -> bool:
    """Text we accept: valid UTF-8 without NUL (Postgres cannot store NUL; Python cannot encode a lone surrogate)."""
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _readable_form(encoded: str | bytes) -> bool:
    raw = encoded.encode("latin-1") if isinstance(encoded, str) else encoded
    return _readable(unquote_to_bytes(raw.replace(b"+", b" ")))


class RejectInvalidTextMiddleware:
    """A 400 page for a path, query string or url-encoded form holding NUL or text that is not UTF-8.

    Such text otherwise reaches Postgres ("cannot contain NUL characters") or an encoder and ends as
    a 500. Multipart forms are parsed by Django itself and their text fields go through forms, whose
    CharField already refuses NUL.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not self._acceptable(request):
            return render(request, "400.html", {"reason": INVALID_TEXT}, status=400)
        return self.get_response(request)

    @staticmethod
    def _acceptable(request) -> bool:
        # Daphne decodes the path with errors="replace"; its raw form still shows broken UTF-8.
        raw_path = getattr(request, "scope", {}).get("raw_path") or request.path.encode(
            "utf-8", "surrogatepass"
        )
        if not _readable(unquote_to_bytes(raw_path)) or "\x00" in request.path:
            return False
        if not _readable_form(request.META.get("QUERY_STRING", "")):
            return False
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            try:
                return _readable_form(request.body)
            except RequestDataTooBig:
                return True  # Django answers this one itself, with its own 400
        return True


INVALID_TEXT = (
    "The address or the form held text this server cannot read (a NUL character or broken Unicode). "
    "Check what you typed and try again."
)


# -- error pages for the network ------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "::1")


class PublicErrorReporter(ExceptionReporter):
    """What DEBUG shows a client that is not on this machine: the plain error page, no traceback."""

    def get_traceback_html(self):
        bad_request = isinstance(self.exc_value, (SuspiciousOperation, BadRequest))
        return render_to_string("400.html" if bad_request else "500.html")

    def get_traceback_text(self):
        return (
            "Bad request."
            if isinstance(self.exc_value, (SuspiciousOperation, BadRequest))
            else "Server error."
        )


class PublicErrorPagesMiddleware:
    """With DEBUG on, Django's technical 404 and 500 pages go to loopback clients only.

    `make run` serves with DEBUG on for developers at the machine; anyone else (a port forward, a
    reverse proxy on another host) gets the templates/404.html and 500.html pages production shows.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.DEBUG and request.META.get("REMOTE_ADDR") not in LOOPBACK:
            request.public_errors = True
            request.exception_reporter_class = PublicErrorReporter
            if not _resolves(request.path_info):
                return render(request, "404.html", status=404)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if getattr(request, "public_errors", False) and isinstance(exception, Http404):
            return render(request, "404.html", status=404)
        return None


def _resolves(path: str) -> bool:
    """Whether a view answers `path`, or `path/` (CommonMiddleware's APPEND_SLASH redirect)."""
    for candidate in (path, path + "/"):
        try:
            resolve(candidate)
            return True
        except Resolver404:
            continue
    return False


# -- WebSocket origin -----------------------------------------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, with the scheme's default port filled in; None if unreadable."""
    try:
        parsed = urlsplit(url)
        port = parsed.port or DEFAULT_PORTS.get(parsed.scheme)
    except ValueError:
        return None
    if not parsed.hostname or port is None:
        return None
    return parsed.scheme, parsed.hostname.lower(), port


class SameOriginWebSocketValidator:
    """Accept a WebSocket only from a page of this very site: scheme, host and port must all match.

    The site is what the socket's own request names (its scheme and Host header), or an entry of
    CSRF_TRUSTED_ORIGINS (a TLS proxy in front that does not pass X-Forwarded-Proto on). Channels'
    AllowedHostsOriginValidator, which wraps this, has already checked the host against ALLOWED_HOSTS.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin = _origin_key(headers.get(b"origin", b"").decode("latin-1"))
        host = headers.get(b"host", b"").decode("latin-1")
        if not host:
            # Every HTTP/1.1 request (every browser's) names its Host; only an in-process test
            # client does not, and a non-browser client can write any Origin it likes anyway.
            return await self.application(scope, receive, send)
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        trusted = {_origin_key(url) for url in settings.CSRF_TRUSTED_ORIGINS}
        if origin is not None and (origin == _origin_key(f"{scheme}://{host}") or origin in trusted):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
