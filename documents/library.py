"""`ConversationLibrary`: the agent's `FileLibrary` over the files attached to one conversation, with
Postgres full-text search (websearch_to_tsquery, ts_rank, ts_headline) over their parts."""

from __future__ import annotations

import threading
from functools import reduce

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, Q

from agent.files import FileHit, FileInfo, FilePartText

from .models import FilePart, FileText
from .services import conversation_files

MAX_LABELS = 200


def _close_thread_connection() -> None:
    """Tools run in pool threads: each call leaves no connection open behind it."""
    if threading.current_thread() is not threading.main_thread():
        connection.close()


def _names(attachments) -> dict[str, object]:
    """Display name → attachment; a repeated name gets " (2)", " (3)" before its extension."""
    names: dict[str, object] = {}
    for attachment in attachments:
        name = attachment.name
        n = 1
        while name in names:
            n += 1
            stem, dot, ext = attachment.name.rpartition(".")
            name = f"{stem} ({n}).{ext}" if dot else f"{attachment.name} ({n})"
        names[name] = attachment
    return names


class ConversationLibrary:
    """Implements `agent.files.FileLibrary` for one conversation's attached files (read each call,
    so files attached or finished during a turn are seen)."""

    def __init__(self, conversation):
        self.conversation = conversation

    def _files(self) -> dict[str, object]:
        return _names(conversation_files(self.conversation))

    def list(self) -> list[FileInfo]:
        try:
            files = self._files()
            labels: dict[int, list[str]] = {}
            rows = (
                FilePart.objects.filter(attachment__in=[a.pk for a in files.values()])
                .order_by("attachment_id", "index")
                .values_list("attachment_id", "label")
            )
            for attachment_id, label in rows:
                seen = labels.setdefault(attachment_id, [])
                if len(seen) < MAX_LABELS and (not seen or seen[-1] != label):
                    seen.append(label)
            out = []
            for name, a in files.items():
                text = getattr(a, "text", None)
                out.append(
                    FileInfo(
                        name=name,
                        kind=text.kind if text else "",
                        parts_total=text.parts_total if text else 0,
                        status=text.status if text else FileText.Status.FAILED,
                        labels=labels.get(a.pk, []),
                        parts_done=text.parts_done if text else 0,
                        error=text.error if text else "The file has no text.",
                    )
                )
            return out
        finally:
            _close_thread_connection()

    def read(self, name: str, start: int, end: int) -> list[FilePartText]:
        try:
            attachment = self._files().get(name)
            if attachment is None:
                return []
            parts = FilePart.objects.filter(attachment=attachment)
            kind = getattr(getattr(attachment, "text", None), "kind", "")
            if kind in ("text", "code", "csv"):
                # Line ranges: those that start within start..end, and the one that holds line `start`.
                first = (
                    parts.filter(number__lte=start).order_by("-number").values_list("number", flat=True)[:1]
                )
                lowest = first[0] if first else start
                parts = parts.filter(number__gte=lowest, number__lte=end)
            else:
                parts = parts.filter(number__gte=start, number__lte=end)
            return [
                FilePartText(name, p.anchor_kind, p.number, p.label, p.text)
                for p in parts.order_by("index").only("anchor_kind", "number", "label", "text")
            ]
        finally:
            _close_thread_connection()

    def search(self, query: str, limit: int, name: str | None = None) -> list[FileHit]:
        try:
            files = self._files()
            if name is not None:
                files = {name: files[name]} if name in files else {}
            if not files or not query.strip():
                return []
            by_id = {a.pk: n for n, a in files.items()}
            scope = FilePart.objects.filter(attachment_id__in=list(by_id))
            q = SearchQuery(query, search_type="websearch", config="english")
            hits = self._ranked(scope, q, limit)
            if not hits:  # every word need not appear: any of them, best ranked first
                words = [w for w in query.replace('"', " ").split() if w.strip("-") and w.lower() != "or"]
                if len(words) > 1:
                    q = reduce(
                        lambda a, b: a | b, (SearchQuery(w.strip("-"), config="english") for w in words)
                    )
                    hits = self._ranked(scope, q, limit)
            return [FileHit(by_id[h["attachment_id"]], h["label"], h["number"], h["snippet"]) for h in hits]
        finally:
            _close_thread_connection()

    @staticmethod
    def _ranked(scope, q, limit: int) -> list[dict]:
        rows = (
            scope.filter(Q(search_vector=q))
            .annotate(
                rank=SearchRank(F("search_vector"), q),
                snippet=SearchHeadline(
                    "text", q, config="english", start_sel="**", stop_sel="**", max_words=40, min_words=15
                ),
            )
            .order_by("-rank", "attachment_id", "index")
            .values("attachment_id", "label", "number", "snippet")[:limit]
        )
        return [{**r, "snippet": " ".join(r["snippet"].split())} for r in rows]


def library_for(conversation) -> ConversationLibrary | None:
    """The conversation's FileLibrary, or None when it has no files (then no file tools are declared)."""
    from .models import ConversationFile

    if not ConversationFile.objects.filter(conversation=conversation).exists():
        return None
    return ConversationLibrary(conversation)
