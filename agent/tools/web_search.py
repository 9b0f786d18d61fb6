"""The `web_search` tool: one query, ranked results with snippets, from the backend the settings choose.

`local` (the offline default) searches the host's corpus (`ToolContext.corpus`; kimiweb's is Postgres
full-text search over its documents); `searxng`, `brave` and `tavily` call those services' JSON APIs.
The result is `SearchResults` as JSON, the one form the model reads and the chat UI shows.
"""

from __future__ import annotations

from dataclasses import replace

import httpx

from ..corpus import SearchHit, SearchResults
from .base import SearchSettings, Tool, ToolContext, ToolError, ToolResult

BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
TAVILY_URL = "https://api.tavily.com/search"
LIMIT = 8
SNIPPET_FLOOR = 120  # snippets are shortened to this before hits are dropped to fit the budget


def search_searxng(query: str, limit: int, base_url: str, timeout: float) -> list[SearchHit]:
    r = httpx.get(f"{base_url.rstrip('/')}/search", params={"q": query, "format": "json"}, timeout=timeout)
    r.raise_for_status()
    return [
        SearchHit(x.get("title", ""), x.get("url", ""), x.get("content", ""))
        for x in r.json()["results"][:limit]
    ]


def search_brave(
    query: str, limit: int, api_key: str, timeout: float, url: str = BRAVE_URL
) -> list[SearchHit]:
    r = httpx.get(
        url,
        params={"q": query, "count": limit},
        headers={"X-Subscription-Token": api_key, "Accept": "application/json"},
        timeout=timeout,
    )
    r.raise_for_status()
    results = r.json().get("web", {}).get("results", [])
    return [
        SearchHit(x.get("title", ""), x.get("url", ""), x.get("description", "")) for x in results[:limit]
    ]


def search_tavily(
    query: str, limit: int, api_key: str, timeout: float, url: str = TAVILY_URL
) -> list[SearchHit]:
    r = httpx.post(
        url,
        json={"query": query, "max_results": limit},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=timeout,
    )
    r.raise_for_status()
    return [
        SearchHit(x.get("title", ""), x.get("url", ""), x.get("content", ""))
        for x in r.json()["results"][:limit]
    ]


def search(query: str, ctx: ToolContext, limit: int = LIMIT) -> list[SearchHit]:
    config: SearchSettings = ctx.search
    timeout = min(ctx.timeout, 30.0)
    if config.backend == "local":
        if ctx.corpus is None:
            raise ToolError("the local search corpus is not available here")
        return ctx.corpus.search(query, limit)
    if config.backend == "searxng":
        return search_searxng(query, limit, config.searxng_url, timeout)
    if config.backend == "brave":
        return search_brave(query, limit, config.brave_api_key, timeout)
    if config.backend == "tavily":
        return search_tavily(query, limit, config.tavily_api_key, timeout)
    raise ToolError(f"unknown search backend {config.backend!r}")


def _shorten(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[: max(0, cap - 1)].rstrip() + "…"


def fit_results(results: SearchResults, max_chars: int) -> str:
    """The results as JSON of at most `max_chars` characters: long snippets are shortened first, then
    the lowest-ranked hits dropped; the JSON itself is never cut."""
    hits = list(results.hits)
    cap = max((len(h.snippet) for h in hits), default=0)
    while True:
        shown = [replace(h, snippet=_shorten(h.snippet, cap)) for h in hits]
        text = SearchResults(results.query, shown).to_json()
        if len(text) <= max_chars or not hits:
            return text
        if cap > SNIPPET_FLOOR:
            cap = max(SNIPPET_FLOOR, cap // 2)
        elif len(hits) > 1:
            hits.pop()
        elif cap > 0:
            cap = 0
        else:
            hits.pop()


def run(arguments: dict, ctx: ToolContext) -> ToolResult:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("`query` must be a non-empty string")
    query = query.strip()
    try:
        hits = search(query, ctx)
    except httpx.HTTPError as exc:
        raise ToolError(f"the search service failed: {exc.__class__.__name__}: {exc}") from exc
    return ToolResult(fit_results(SearchResults(query, hits), ctx.max_chars))


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
