"""What the chat's pages show of uploaded files: chips (name, kind, size, extraction status) and the
links that citations of a conversation's files (`[report.pdf, p. 3]`) resolve to.

Reads only; the chat app renders these with its templates and passes `Citations` to the markdown
renderer (chat.rendering.render_markdown's `cite`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import ObjectDoesNotExist
from django.urls import reverse

from . import services
from .models import ConversationFile, FilePart

FINAL = ("ready", "failed")


def file_status(attachment) -> dict:
    """The extraction status of a file as the chip's status line shows it (the keys of a
    `file.status` group message)."""
    try:
        text = attachment.text
    except ObjectDoesNotExist:
        text = None
    return {
        "uuid": str(attachment.uuid),
        "status": text.status if text is not None else "queued",
        "parts_done": text.parts_done if text is not None else 0,
        "parts_total": text.parts_total if text is not None else 0,
        "error": text.error if text is not None else "",
    }


def file_kind(attachment) -> str:
    try:
        kind = attachment.text.kind
    except ObjectDoesNotExist:
        kind = ""
    if not kind and "." in attachment.name:
        kind = attachment.name.rsplit(".", 1)[-1].lower()
    return kind


SHORT_KINDS = {"markdown": "MD", "text": "TXT"}


def kind_label(attachment, kind: str) -> str:
    """The chip's type badge: PDF, DOCX, XLSX, MD, TXT; source code by its extension (PY, JS)."""
    if kind == "code" and "." in attachment.name:
        return attachment.name.rsplit(".", 1)[-1].upper()[:6]
    return SHORT_KINDS.get(kind, kind.upper()) or "FILE"


def open_url(attachment, kind: str, share_token: str | None = None) -> str:
    """Where the chip's name leads: a PDF in the browser's viewer, anything else in the text view."""
    if kind == "pdf":
        if share_token:
            return reverse("chat:shared_attachment", args=[share_token, attachment.uuid])
        return reverse("chat:attachment", args=[attachment.uuid])
    if share_token:
        return reverse("documents:shared_text", args=[share_token, attachment.uuid])
    return reverse("documents:text", args=[attachment.uuid])


def chip(attachment, *, share_token: str | None = None, links: bool = True) -> dict:
    """A file chip's context: name, kind, size, status; `links` False on a share without files."""
    kind = file_kind(attachment)
    status = file_status(attachment)
    return {
        **status,
        "name": attachment.name,
        "size": attachment.size,
        "kind": kind,
        "label": kind_label(attachment, kind),
        "final": status["status"] in FINAL,
        "url": open_url(attachment, kind, share_token) if links else "",
    }


def turn_uploads(turn, *, share_token: str | None = None, links: bool = True) -> list[dict]:
    """Chips of the files sent with a turn's message, in the order they were added."""
    if turn is None:
        return []
    return [chip(a, share_token=share_token, links=links) for a in services.turn_files(turn)]


def uploads_by_turn(conversation, *, share_token: str | None = None, links: bool = True) -> dict[int, list]:
    """Chips of every message's files in a conversation, by turn id (one query for the whole thread)."""
    by_turn: dict[int, list] = {}
    rows = (
        ConversationFile.objects.filter(conversation=conversation, turn__isnull=False)
        .select_related("attachment__text")
        .order_by("added", "id")
    )
    for link in rows:
        by_turn.setdefault(link.turn_id, []).append(
            chip(link.attachment, share_token=share_token, links=links)
        )
    return by_turn


# -- citations ------------------------------------------------------------------------------------


@dataclass
class CitedFile:
    """One file of the conversation an answer may cite, with the anchors of its parts."""

    name: str
    kind: str
    url: str  # the file (PDF) or its text view; "" when the reader may not open it
    parts: list[tuple[int, str, int | None, str]] = field(
        default_factory=list
    )  # (index, kind, number, label)


_NUMBERED = re.compile(r"^(?:(pp?|pages?|pg|slides?|sheet|lines?|ll?|rows?)\b\.?)?\s*(\d+)", re.I)
_PREFIX = re.compile(r"^(?:§+|section|sec\.|sheet|heading)\s*", re.I)
_RANGE = re.compile(r"(\d+)\s*[-–]\s*(\d+)")


def _norm(label: str) -> str:
    text = _PREFIX.sub("", label.strip().lstrip("#").strip())
    return " ".join(text.strip("\"'“”‘’").split()).casefold()


def _kind_of(word: str) -> str:
    word = word.lower()
    if word.startswith("p"):
        return "page"
    if word.startswith("sh"):
        return "sheet"
    if word.startswith("s"):
        return "slide"
    return "lines"


def anchor_href(cited: CitedFile, anchor: str) -> str:
    """The link for one citation: a PDF page as `#page=N`, any other anchor as the text view's
    `#part-<index>` of the first part it names; the file itself when the anchor names no part."""
    if not cited.url:
        return ""
    anchor = anchor.strip()
    if not anchor:
        return cited.url
    numbered = _NUMBERED.match(anchor)
    if cited.kind == "pdf" and numbered and _kind_of(numbered.group(1) or "p") == "page":
        return f"{cited.url}#page={int(numbered.group(2))}"
    wanted = _norm(anchor)
    for index, _kind, _number, label in cited.parts:
        if _norm(label) == wanted:
            return f"{cited.url}#part-{index}"
    if numbered:
        kind, number = _kind_of(numbered.group(1) or "p"), int(numbered.group(2))
        for index, part_kind, part_number, label in cited.parts:
            if part_kind == kind == "lines":
                span = _RANGE.search(label)
                if span and int(span.group(1)) <= number <= int(span.group(2)):
                    return f"{cited.url}#part-{index}"
            elif part_number == number and (part_kind == kind or numbered.group(1) is None):
                return f"{cited.url}#part-{index}"
    return cited.url


class Citations:
    """`cite(name, anchor)` for the markdown renderer: the link, or None for a name that is not one
    of the conversation's files (so `[anything, p. 3]` elsewhere stays text)."""

    def __init__(self, files: list[CitedFile]):
        self.by_name = {f.name.casefold(): f for f in files}

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __call__(self, name: str, anchor: str) -> str | None:
        cited = self.by_name.get(name.strip().strip("`*_\"'").casefold())
        if cited is None:
            return None
        return anchor_href(cited, anchor) or None


def citations_for(conversation, *, share_token: str | None = None, links: bool = True) -> Citations:
    """The conversation's files that answers may cite; on a share, links only when `links`."""
    files = {}
    for attachment in services.conversation_files(conversation):
        kind = file_kind(attachment)
        url = open_url(attachment, kind, share_token) if links else ""
        files[attachment.pk] = CitedFile(name=attachment.name, kind=kind, url=url)
    if files:
        rows = (
            FilePart.objects.filter(attachment_id__in=files)
            .order_by("attachment_id", "index")
            .values_list("attachment_id", "index", "anchor_kind", "number", "label")
        )
        for attachment_id, index, kind, number, label in rows:
            files[attachment_id].parts.append((index, kind, number, label))
    return Citations(list(files.values()))
