"""The agent's `Corpus` over the `Document` table: Postgres full-text search for `web_search`'s
`local` backend, and whole pages for `browse`."""

from __future__ import annotations

import logging

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank
from django.db import DatabaseError
from django.db.models import F

from agent.corpus import Page, SearchHit
from corpus.models import Document

log = logging.getLogger(__name__)


class DocumentCorpus:
    """Implements `agent.corpus.Corpus` with the ORM (ranked, with `**highlighted**` snippets)."""

    def search(self, query: str, limit: int) -> list[SearchHit]:
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
        return [SearchHit(r["title"], r["url"], " ".join(r["snippet"].split())) for r in rows]

    def page(self, url: str) -> Page | None:
        try:
            doc = Document.objects.filter(url=url).only("url", "title", "text").first()
        except DatabaseError:  # browse then fetches the page from the network instead
            log.exception("the corpus lookup of %s failed", url)
            return None
        return Page(doc.url, doc.title, doc.text) if doc is not None else None
