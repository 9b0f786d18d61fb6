"""The `web_search` tool: one query, ranked results with snippets, from the backend settings choose.

`local` (the offline default) is Postgres full-text search over `chat.models.Document`; `searxng`,
`brave` and `tavily` call those services' JSON APIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .base import Tool, ToolContext, ToolError, ToolResult, truncate

BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
TAVILY_URL = "https://api.tavily.com/search"


@dataclass
class Hit:
    title: str
    url: str
    snippet: str


def search_local(query: str, limit: int) -> list[Hit]:
    from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank
    from django.db.models import F

    from chat.models import Document

    q = SearchQuery(query, search_type="websearch", config="english")
    rows = (
        Document.objects.filter(search_vector=q)
        .annotate(
            rank=SearchRank(F("search_vector"), q),
            snippet=SearchHeadline(
                "text", q, config="english", start_sel="**", stop_sel="**", max_words=40, min_words=15
            ),
        )
        .order_by("-rank", "id")
        .values("title", "url", "snippet")[:limit]
    )
    return [Hit(r["title"], r["url"], " ".join(r["snippet"].split())) for r in rows]


def search_searxng(query: str, limit: int, base_url: str, timeout: float) -> list[Hit]:
    r = httpx.get(f"{base_url.rstrip('/')}/search", params={"q": query, "format": "json"}, timeout=timeout)
    r.raise_for_status()
    return [
        Hit(x.get("title", ""), x.get("url", ""), x.get("content", "")) for x in r.json()["results"][:limit]
    ]


def search_brave(query: str, limit: int, api_key: str, timeout: float, url: str = BRAVE_URL) -> list[Hit]:
    r = httpx.get(
        url,
        params={"q": query, "count": limit},
        headers={"X-Subscription-Token": api_key, "Accept": "application/json"},
        timeout=timeout,
    )
    r.raise_for_status()
    results = r.json().get("web", {}).get("results", [])
    return [Hit(x.get("title", ""), x.get("url", ""), x.get("description", "")) for x in results[:limit]]


def search_tavily(query: str, limit: int, api_key: str, timeout: float, url: str = TAVILY_URL) -> list[Hit]:
    r = httpx.post(
        url,
        json={"query": query, "max_results": limit},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=timeout,
    )
    r.raise_for_status()
    return [
        Hit(x.get("title", ""), x.get("url", ""), x.get("content", "")) for x in r.json()["results"][:limit]
    ]


def search(query: str, limit: int = 8, timeout: float = 15.0, backend: str | None = None) -> list[Hit]:
    from django.conf import settings

    backend = backend or settings.SEARCH_BACKEND
    if backend == "local":
        return search_local(query, limit)
    if backend == "searxng":
        return search_searxng(query, limit, settings.SEARXNG_URL, timeout)
    if backend == "brave":
        return search_brave(query, limit, settings.BRAVE_API_KEY, timeout)
    if backend == "tavily":
        return search_tavily(query, limit, settings.TAVILY_API_KEY, timeout)
    raise ToolError(f"unknown search backend {backend!r}")


def format_hits(query: str, hits: list[Hit]) -> str:
    if not hits:
        return f"No results for {query!r}."
    lines = [f"Results for {query!r}:"]
    for i, hit in enumerate(hits, 1):
        lines.append(f"\n{i}. {hit.title or hit.url}\n   {hit.url}\n   {hit.snippet}")
    return "\n".join(lines)


def run(arguments: dict, ctx: ToolContext) -> ToolResult:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("`query` must be a non-empty string")
    try:
        hits = search(query.strip(), timeout=min(ctx.timeout, 30.0))
    except httpx.HTTPError as exc:
        raise ToolError(f"the search service failed: {exc.__class__.__name__}: {exc}") from exc
    return ToolResult(truncate(format_hits(query.strip(), hits), ctx.max_chars))


WEB_SEARCH = Tool(
    name="web_search",
    description="Search the web (or the local document corpus) and return ranked results with URLs and snippets.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to search for."}},
        "required": ["query"],
    },
    run=run,
)
