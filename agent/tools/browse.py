"""The `browse` tool: open a URL and return its main text as markdown, through the SSRF guard.

Pages in the local corpus (`ToolContext.corpus`) open from there without network; any other page is
fetched with httpx, connecting only to the address the guard checked, and extracted with trafilatura.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from .base import Tool, ToolContext, ToolError, ToolResult, truncate
from .ssrf import Resolver, check_url, system_resolver

MAX_BYTES = 3 << 20
MAX_REDIRECTS = 5
USER_AGENT = "kimiweb-browse/0.1 (+self-hosted research agent)"


def fetch(
    url: str,
    *,
    resolver: Resolver = system_resolver,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 15.0,
    max_bytes: int = MAX_BYTES,
) -> tuple[str, str, str]:
    """GET `url` safely; return (final_url, content_type, body text). `transport` is for tests."""
    deadline = time.monotonic() + timeout
    with httpx.Client(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            scheme, host, port, address = check_url(url, resolver)
            parts = urlsplit(url)
            ip_host = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
            default_port = port == (443 if scheme == "https" else 80)
            headers = {
                "Host": host if default_port else f"{host}:{port}",
                "User-Agent": USER_AGENT,
                "Accept": "text/html,text/plain,application/xhtml+xml;q=0.9,*/*;q=0.5",
            }
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ToolError(f"timed out opening {url}")
            try:
                with client.stream(
                    "GET",
                    pinned,
                    headers=headers,
                    extensions={"sni_hostname": host, "timeout": {"connect": remaining, "read": remaining}},
                ) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise ToolError(f"{url} redirected without a location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code >= 400:
                        raise ToolError(f"{url} answered HTTP {response.status_code}")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            break
                        if time.monotonic() > deadline:
                            raise ToolError(f"timed out reading {url}")
                    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    encoding = response.charset_encoding or "utf-8"
                    return url, ctype, bytes(body[:max_bytes]).decode(encoding, errors="replace")
            except httpx.HTTPError as exc:
                raise ToolError(f"could not open {url}: {exc.__class__.__name__}: {exc}") from exc
    raise ToolError(f"too many redirects from {url}")


_HREF = re.compile(r"""(href\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_PERMALINK = re.compile(r"<a\b[^>]*>\s*(¶|#|&para;|&#182;)\s*</a>", re.IGNORECASE)


def html_to_markdown(html: str, url: str = "") -> str:
    import trafilatura

    # Resolve links against the page itself (trafilatura resolves against the site root), and drop
    # the "¶" permalinks documentation generators put after every heading.
    html = _PERMALINK.sub("", html)
    if url:
        html = _HREF.sub(lambda m: f"{m.group(1)}{m.group(2)}{urljoin(url, m.group(3))}{m.group(2)}", html)

    text = trafilatura.extract(
        html,
        url=url or None,
        output_format="markdown",
        include_links=True,
        include_tables=True,
        include_comments=False,
        favor_recall=True,
    )
    if not text:  # trafilatura found no main text: fall back to its plain baseline extraction
        from trafilatura import baseline

        _, text, _ = baseline(html)
    return text or ""


def _from_corpus(url: str, ctx: ToolContext) -> str | None:
    page = ctx.corpus.page(url) if ctx.corpus is not None else None
    if page is None:
        return None
    return f"# {page.title}\n\n{page.text}" if page.title else page.text


def open_page(url: str, ctx: ToolContext, **fetch_options) -> str:
    page = _from_corpus(url, ctx)
    if page is not None:
        return page
    final_url, ctype, body = fetch(url, timeout=min(ctx.timeout, 30.0), **fetch_options)
    if ctype in ("text/html", "application/xhtml+xml", ""):
        text = html_to_markdown(body, final_url)
    elif ctype.startswith("text/") or ctype in ("application/json", "application/xml"):
        text = body
    else:
        raise ToolError(f"{final_url} is {ctype}, which browse cannot read")
    header = f"URL: {final_url}\n\n" if final_url != url else ""
    return header + (text.strip() or "(the page has no readable text)")


def run(arguments: dict, ctx: ToolContext) -> ToolResult:
    url = arguments.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ToolError("`url` must be a non-empty string")
    return ToolResult(truncate(open_page(url.strip(), ctx), ctx.max_chars))


BROWSE = Tool(
    name="browse",
    description="Open a web page (http or https URL) and return its main text as markdown, truncated.",
    parameters={
        "type": "object",
        "properties": {"url": {"type": "string", "description": "The absolute URL to open."}},
        "required": ["url"],
    },
    run=run,
)
