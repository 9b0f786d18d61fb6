"""How the trace generator runs tools: the agent's real tools (`agent.tools`) over an in-memory `Corpus`
of the fictional pages, so `web_search` (local backend) and `browse` need neither Django nor Postgres.
`seed_corpus` also loads the pages into kimiweb's corpus app, for trying kimi-mini in the chat UI."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from agent.corpus import Page, SearchHit
from agent.tools import ToolContext, ToolError, get_tool
from agent.tools.base import SearchSettings

from .data import RunTool

CORPUS_SOURCE = "kimi-mini"
SNIPPET_CHARS = 200
_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


@dataclass
class FictionalCorpus:
    """The fictional pages as the agent's `Corpus`: a search ranks pages by how many of the query's
    words they contain (a title word counts twice), ties by URL; `page` opens one by its URL."""

    docs: list[dict]
    _by_url: dict[str, dict] = field(init=False, repr=False)

    def __post_init__(self):
        self._by_url = {d["url"]: d for d in self.docs}

    def search(self, query: str, limit: int) -> list[SearchHit]:
        wanted = _words(query)
        scored = []
        for d in self.docs:
            score = 2 * len(wanted & _words(d["title"])) + len(wanted & _words(d["text"]))
            if score:
                scored.append((-score, d["url"], d))
        scored.sort(key=lambda s: s[:2])
        return [SearchHit(d["title"], d["url"], d["text"][:SNIPPET_CHARS]) for _, _, d in scored[:limit]]

    def page(self, url: str) -> Page | None:
        d = self._by_url.get(url)
        return Page(d["url"], d["title"], d["text"]) if d else None


def agent_run_tool(corpus: list[dict]) -> RunTool:
    """The real tools: `python` in the bubblewrap sandbox, `web_search` with the local backend and
    `browse` over the fictional pages."""
    fictional = FictionalCorpus(corpus)

    def run(name: str, args: dict) -> str:
        ctx = ToolContext(timeout=30.0, corpus=fictional, search=SearchSettings(backend="local"))
        try:
            return get_tool(name).run(args, ctx).text
        except ToolError as exc:
            return f"Error: {exc}"

    return run


def seed_corpus(corpus: list[dict]) -> int:
    """Upsert the fictional pages into kimiweb's corpus (source "kimi-mini"), so the chat's own
    `web_search` finds them. Needs Django settings and Postgres."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    import django

    django.setup()
    from corpus.models import Document

    for d in corpus:
        Document.objects.update_or_create(
            url=d["url"], defaults={"title": d["title"], "text": d["text"], "source": CORPUS_SOURCE}
        )
    return len(corpus)
