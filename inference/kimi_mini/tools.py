"""How the trace generator runs tools: the agent's real tools (`agent.tools`), with the fictional corpus
loaded into the local search backend. `web_search`/`browse` over the local corpus need Django, so
`agent_run_tool` calls `django.setup()` when it is called, never at import (inference/ imports no Django)."""

from __future__ import annotations

import logging
import os

from .data import RunTool, fallback_run_tool

log = logging.getLogger(__name__)
CORPUS_SOURCE = "kimi-mini"


def seed_corpus(corpus: list[dict]) -> int:
    """Upsert the fictional pages into `chat.Document` (source "kimi-mini") so the real `web_search` local
    backend and `browse` find them. Needs Django settings and Postgres."""
    _django_setup()
    from chat.models import Document

    for d in corpus:
        Document.objects.update_or_create(
            url=d["url"], defaults={"title": d["title"], "text": d["text"], "source": CORPUS_SOURCE}
        )
    return len(corpus)


def _django_setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    import django

    django.setup()


def agent_run_tool(corpus: list[dict]) -> RunTool:
    """The real tools: `python` in the bubblewrap sandbox, `web_search` with the local backend over Postgres,
    `browse` (corpus pages come from Postgres too). Falls back to `fallback_run_tool` for search/browse only
    when Django or Postgres is unavailable, and says so in the log."""
    from agent.tools import ToolContext, ToolError, get_tool

    search_ok = True
    try:
        seed_corpus(corpus)
    except Exception as exc:  # no Postgres / no Django: keep going, but loudly
        log.warning("local search corpus unavailable (%s); web_search/browse use the fallback runner", exc)
        search_ok = False
    fallback = fallback_run_tool(corpus)

    def run(name: str, args: dict) -> str:
        if name != "python" and not search_ok:
            return fallback(name, args)
        try:
            return get_tool(name).run(args, ToolContext(timeout=30.0)).text
        except ToolError as exc:
            return f"Error: {exc}"

    return run
