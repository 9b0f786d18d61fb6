"""What the search tools read, without Django: search hits, pages, and the `Corpus` protocol a host
application implements over its own documents (kimiweb's lives in the `corpus` app, over Postgres).

`SearchResults` is the one structured form of a search: the `web_search` tool returns it as JSON,
the model reads it, and the chat UI's sources panel and search card parse it with `from_json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str = ""


@dataclass(frozen=True)
class Page:
    url: str
    title: str
    text: str


@dataclass
class SearchResults:
    query: str
    hits: list[SearchHit] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"query": self.query, "results": [asdict(h) for h in self.hits]}, ensure_ascii=False, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> SearchResults | None:
        """The results a `web_search` tool call returned; None for anything else (an error text)."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            return None
        hits = [
            SearchHit(str(r.get("title") or ""), r["url"], str(r.get("snippet") or ""))
            for r in data["results"]
            if isinstance(r, dict) and isinstance(r.get("url"), str)
        ]
        return cls(str(data.get("query") or ""), hits)


class Corpus(Protocol):
    """A local document collection the agent can search and open without the network."""

    def search(self, query: str, limit: int) -> list[SearchHit]: ...

    def page(self, url: str) -> Page | None: ...
