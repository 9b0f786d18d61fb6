"""The artifact runtime: the page an artifact's sandboxed frame loads, its CSP, and the artifact host.

An artifact (HTML, SVG, a React component, a Mermaid diagram from an answer) runs in
`<iframe sandbox="allow-scripts">` on this page, served either from `ARTIFACT_ORIGIN` (the same
Daphne under another host name) or from the app's own host with `Content-Security-Policy: sandbox
allow-scripts`, which gives the document an opaque origin whatever loaded it. Its policy lets scripts
run only from the vendored artifact libraries plus the artifact's own inline code (eval is allowed
here, for the in-browser JSX transform, and nowhere else) and blocks every network request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

# The libraries an artifact can use, by the name the document builder asks for (static/artifact/build.js).
VENDORED = {
    "react": "vendor/artifact/react.production.min.js",
    "react-dom": "vendor/artifact/react-dom.production.min.js",
    "prop-types": "vendor/artifact/prop-types.min.js",
    "recharts": "vendor/artifact/recharts.min.js",
    "lucide-react": "vendor/artifact/lucide-react.min.js",
    "babel": "vendor/artifact/babel.min.js",
    "tailwind": "vendor/artifact/tailwindcss-browser.min.js",
    "mermaid": "vendor/artifact/mermaid.min.js",
    "bridge": "artifact/bridge.js",
    "react-boot": "artifact/react_boot.js",
    "mermaid-boot": "artifact/mermaid_boot.js",
}


def asset_urls() -> dict[str, str]:
    """Name -> static URL (path only, so it resolves against whichever host serves the page)."""
    return {name: static(path) for name, path in VENDORED.items()}


def artifact_host() -> str | None:
    """`host[:port]` of ARTIFACT_ORIGIN, or None when artifacts run on the app's host."""
    origin = getattr(settings, "ARTIFACT_ORIGIN", "")
    return urlsplit(origin).netloc.lower() if origin else None


def runtime_url() -> str:
    """Where the panel's frame loads the runtime page from."""
    origin = getattr(settings, "ARTIFACT_ORIGIN", "").rstrip("/")
    return origin + "/artifact/runtime/"


def runtime_policy(origin: str) -> str:
    """The runtime page's CSP: scripts from the artifact asset folders and inline, no network at all."""
    static_root = (
        origin + settings.STATIC_URL
        if settings.STATIC_URL.startswith("/")
        else origin + "/" + settings.STATIC_URL
    )
    scripts = f"{static_root}vendor/artifact/ {static_root}artifact/"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts} 'unsafe-inline' 'unsafe-eval' data:",
            "style-src 'unsafe-inline'",
            "img-src data: blob:",
            "font-src data:",
            "media-src data: blob:",
            "connect-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
            "sandbox allow-scripts",
        ]
    )


def runtime_context(request) -> dict:
    """Template context: where artifact frames load the runtime page from (base.html's meta tag)."""
    return {"artifact_runtime_url": runtime_url()}


@require_GET
@xframe_options_exempt
def runtime(request):
    """The page a sandboxed artifact frame (or an "open in new tab") renders the artifact on."""
    origin = f"{request.scheme}://{request.get_host()}"
    response = render(request, "chat/artifact_runtime.html", {"assets": asset_urls()})
    response.headers["Content-Security-Policy"] = runtime_policy(origin)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


class ArtifactHostMiddleware:
    """On the artifact host serve only the runtime page and static files, and never a cookie.

    Placed before the session and CSRF middleware, so a request there is never tied to a user.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.host = artifact_host()
        self.static_prefix = "/" + settings.STATIC_URL.strip("/") + "/"

    def __call__(self, request):
        if not self.host or request.get_host().lower() != self.host:
            return self.get_response(request)
        if not (request.path.startswith("/artifact/") or request.path.startswith(self.static_prefix)):
            raise Http404("Only artifacts are served on this host.")
        request.COOKIES = {}
        request.META.pop("HTTP_COOKIE", None)
        response = self.get_response(request)
        for name in list(response.cookies):
            del response.cookies[name]
        return response
