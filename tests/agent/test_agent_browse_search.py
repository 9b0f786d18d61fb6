"""The browse tool's SSRF guard and extraction, and web_search's backends."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agent.corpus import SearchHit, SearchResults
from agent.tools import SearchSettings, ToolContext, ToolError, get_tool
from agent.tools.browse import fetch, open_page
from agent.tools.ssrf import address_is_public, check_url
from agent.tools.web_search import fit_results, search_brave, search_tavily
from corpus.models import Document
from corpus.search import DocumentCorpus

# The corpus (DocumentCorpus over Postgres) serves the local search backend and browse, so these use the db.
pytestmark = [pytest.mark.timeout(60), pytest.mark.django_db]

PAGE = """<html><head><title>Widgets</title></head><body><nav>menu menu</nav>
<article><h1>All about widgets</h1><p>Widgets are small devices that do one thing well. They were
first described in an <a href="https://example.org/paper">early paper</a> and are still in use today
across many industries, from clocks to cars.</p>
<table><tr><th>kind</th><th>count</th></tr><tr><td>blue</td><td>3</td></tr></table></article></body></html>"""


class JsonServer:
    """A tiny real HTTP server that records requests and answers with a fixed JSON body or page."""

    def __init__(self, body, content_type="application/json"):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/admin/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://[::ffff:7f00:1]:6379/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
    ],
)
def test_private_loopback_and_reserved_addresses_are_refused(url):
    with pytest.raises(ToolError, match="refused"):
        get_tool("browse").run({"url": url}, ToolContext())


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/", "gopher://x/", "javascript:alert(1)"]
)
def test_only_http_and_https_are_opened(url):
    with pytest.raises(ToolError, match="only http and https"):
        get_tool("browse").run({"url": url}, ToolContext())


def test_a_name_that_resolves_to_loopback_is_refused():
    def resolver(host, port):
        return ["93.184.216.34", "127.0.0.1"]  # one bad address among good ones is enough to refuse

    with pytest.raises(ToolError, match="refused"):
        check_url("http://rebind.example/", resolver)


def test_a_real_server_on_loopback_is_never_contacted():
    server = JsonServer(b"secret", "text/plain")
    try:
        with pytest.raises(ToolError, match="refused"):
            get_tool("browse").run({"url": server.url + "/"}, ToolContext())
    finally:
        server.close()
    assert server.requests == []


def test_address_checks_unwrap_mapped_and_translated_forms():
    assert address_is_public("93.184.216.34") and address_is_public("2606:4700::1111")
    assert not address_is_public("::ffff:10.1.2.3")
    assert not address_is_public("64:ff9b::5db8:d822"), "NAT64 is refused even for a public embedded v4"
    assert not address_is_public("2002:7f00:1::"), "6to4 of loopback"
    assert not address_is_public("ff02::1")


def public_resolver(host, port):
    return {"docs.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"]}.get(host, ["203.0.113.9"])


def test_the_public_path_connects_to_the_checked_address_and_returns_markdown():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/html; charset=utf-8"}, text=PAGE)

    text = open_page(
        "https://docs.example/widgets",
        ToolContext(),
        resolver=public_resolver,
        transport=httpx.MockTransport(handler),
    )
    request = seen[0]
    assert request.url.host == "93.184.216.34", "connect to the address that was checked, never re-resolve"
    assert request.headers["host"] == "docs.example"
    assert request.extensions["sni_hostname"] == "docs.example", "TLS still verifies the real name"
    assert "Widgets are small devices" in text and "menu menu" not in text
    assert "[early paper](https://example.org/paper)" in text
    assert "| blue | 3 |" in text or "blue" in text


def test_a_redirect_to_loopback_is_refused():
    def handler(request: httpx.Request):
        return httpx.Response(302, headers={"location": "http://127.0.0.1:6379/"})

    with pytest.raises(ToolError, match="refused"):
        fetch("https://docs.example/", resolver=public_resolver, transport=httpx.MockTransport(handler))


def test_a_redirect_to_a_name_resolving_to_loopback_is_refused():
    hops = []

    def handler(request: httpx.Request):
        hops.append(request.url.host)
        return httpx.Response(301, headers={"location": "https://evil.example/steal"})

    with pytest.raises(ToolError, match="refused"):
        fetch("https://docs.example/", resolver=public_resolver, transport=httpx.MockTransport(handler))
    assert hops == ["93.184.216.34"]


def test_large_bodies_are_capped():
    def handler(request):
        return httpx.Response(200, headers={"content-type": "text/plain"}, text="a" * 100_000)

    _, _, body = fetch(
        "https://docs.example/big",
        resolver=public_resolver,
        transport=httpx.MockTransport(handler),
        max_bytes=1000,
    )
    assert len(body) == 1000


def test_corpus_documents_open_from_the_database_without_network():
    Document.objects.create(
        url="https://docs.python.org/3/library/asyncio.html", title="asyncio", text="Event loops."
    )
    ctx = ToolContext(corpus=DocumentCorpus())
    result = get_tool("browse").run({"url": "https://docs.python.org/3/library/asyncio.html"}, ctx)
    assert result.text == "# asyncio\n\nEvent loops."


def test_local_search_ranks_corpus_documents_with_highlighted_snippets():
    Document.objects.create(
        url="https://d/1",
        title="asyncio — Asynchronous I/O",
        text="asyncio is a library to write concurrent code using the async/await syntax. The event loop runs tasks.",
    )
    Document.objects.create(
        url="https://d/2",
        title="threading",
        text="This module constructs higher-level threading interfaces. An event object is a simple signal.",
    )
    Document.objects.create(url="https://d/3", title="json", text="JSON encoder and decoder.")
    ctx = ToolContext(corpus=DocumentCorpus(), search=SearchSettings(backend="local"))
    results = SearchResults.from_json(get_tool("web_search").run({"query": "asyncio event loop"}, ctx).text)
    urls = [hit.url for hit in results.hits]
    assert results.query == "asyncio event loop"
    assert urls[0] == "https://d/1" and "https://d/3" not in urls
    assert "**asyncio**" in results.hits[0].snippet or "**loop**" in results.hits[0].snippet
    empty = SearchResults.from_json(get_tool("web_search").run({"query": "zzzxqv"}, ctx).text)
    assert empty == SearchResults("zzzxqv", [])


def test_local_search_without_a_corpus_tells_the_model():
    with pytest.raises(ToolError, match="corpus is not available"):
        get_tool("web_search").run({"query": "anything"}, ToolContext())


def test_search_results_fit_the_budget_by_shortening_and_dropping_hits_never_by_cutting_json():
    hits = [SearchHit(f"Title {i}", f"https://e.example/{i}", "word " * 200) for i in range(8)]
    for budget in (6000, 2000, 700, 200):
        text = fit_results(SearchResults("q", hits), budget)
        assert len(text) <= budget
        fitted = SearchResults.from_json(text)
        assert fitted is not None and fitted.query == "q"
        assert [h.url for h in fitted.hits] == [h.url for h in hits[: len(fitted.hits)]], "best hits kept"
    assert len(SearchResults.from_json(fit_results(SearchResults("q", hits), 2000)).hits) >= 4


def test_searxng_backend_speaks_its_json_api():
    server = JsonServer(
        {"results": [{"title": "SearXNG hit", "url": "https://a.example/", "content": "snippet a"}]}
    )
    ctx = ToolContext(search=SearchSettings(backend="searxng", searxng_url=server.url))
    try:
        result = get_tool("web_search").run({"query": "kimi k2"}, ctx)
    finally:
        server.close()
    method, path, _, _ = server.requests[0]
    assert method == "GET" and parse_qs(urlsplit(path).query) == {"q": ["kimi k2"], "format": ["json"]}
    assert SearchResults.from_json(result.text).hits == [
        SearchHit("SearXNG hit", "https://a.example/", "snippet a")
    ]


def test_brave_and_tavily_backends_send_their_keys_and_parse_results():
    brave = JsonServer(
        {"web": {"results": [{"title": "B", "url": "https://b.example/", "description": "bd"}]}}
    )
    tavily = JsonServer({"results": [{"title": "T", "url": "https://t.example/", "content": "tc"}]})
    try:
        b = search_brave("q1", 5, "brave-key", 5, url=brave.url + "/res/v1/web/search")
        t = search_tavily("q2", 5, "tvly-key", 5, url=tavily.url + "/search")
    finally:
        brave.close()
        tavily.close()
    assert [(h.title, h.url, h.snippet) for h in b] == [("B", "https://b.example/", "bd")]
    assert [(h.title, h.url, h.snippet) for h in t] == [("T", "https://t.example/", "tc")]
    assert brave.requests[0][2]["X-Subscription-Token"] == "brave-key"
    assert tavily.requests[0][2]["Authorization"] == "Bearer tvly-key"
    assert json.loads(tavily.requests[0][3]) == {"query": "q2", "max_results": 5}
