"""What the file tools read, without Django: the `FileLibrary` protocol a host implements over the files
attached to one conversation (kimiweb's is `documents.library.ConversationLibrary`), its data types, and
the system-prompt line that tells the model which files it has.

A file's text is in anchored parts: a page (label "p. 3"), a slide ("slide 2"), a sheet ("sheet
Sales"), a heading section ("## Results") or a range of lines ("lines 1-120"). `number` is the page,
slide, sheet or section number (1-based), or the first line of a range. The model cites a part as
`[file name, label]`, e.g. `[report.pdf, p. 3]`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

KIND_NAMES = {
    "pdf": "PDF",
    "docx": "Word document",
    "pptx": "PowerPoint",
    "xlsx": "Excel workbook",
    "csv": "CSV",
    "html": "HTML page",
    "markdown": "Markdown",
    "text": "text",
    "code": "source code",
}

# What one anchor of a kind is called, singular and plural, in tool texts.
UNIT_NAMES = {
    "pdf": ("page", "pages"),
    "pptx": ("slide", "slides"),
    "xlsx": ("sheet", "sheets"),
    "docx": ("section", "sections"),
    "html": ("section", "sections"),
    "markdown": ("section", "sections"),
    "csv": ("row range", "row ranges"),
    "text": ("line range", "line ranges"),
    "code": ("line range", "line ranges"),
}


@dataclass(frozen=True)
class FileInfo:
    name: str
    kind: str  # pdf | docx | pptx | xlsx | csv | html | markdown | text | code
    parts_total: int  # pages, slides, sheets, sections or line ranges
    status: str  # queued | reading | ready | failed
    labels: list[str] = field(default_factory=list)  # the anchors' labels, in order
    parts_done: int = 0
    error: str = ""


@dataclass(frozen=True)
class FilePartText:
    name: str
    anchor_kind: str  # page | slide | sheet | section | lines
    number: int
    label: str
    text: str

    @property
    def citation(self) -> str:
        return f"[{self.name}, {self.label}]"


@dataclass(frozen=True)
class FileHit:
    name: str
    label: str
    number: int
    snippet: str  # matches marked **like this**

    @property
    def citation(self) -> str:
        return f"[{self.name}, {self.label}]"


class FileLibrary(Protocol):
    """The files of one conversation, as the agent may read them (the owner's own files only)."""

    def list(self) -> list[FileInfo]: ...

    def read(self, name: str, start: int, end: int) -> list[FilePartText]:
        """The parts of file `name` whose anchor number is in start..end (inclusive), in order; for line
        ranges, the ranges that overlap lines start..end."""
        ...

    def search(self, query: str, limit: int, name: str | None = None) -> list[FileHit]: ...


def unit(kind: str, count: int = 1) -> str:
    singular, plural = UNIT_NAMES.get(kind, ("part", "parts"))
    return singular if count == 1 else plural


def describe(info: FileInfo) -> str:
    """`report.pdf (PDF, 12 pages)`; with the status when the file is not ready."""
    what = f"{KIND_NAMES.get(info.kind, info.kind)}, {info.parts_total} {unit(info.kind, info.parts_total)}"
    if info.status in ("queued", "reading"):
        what = f"{KIND_NAMES.get(info.kind, info.kind)}, still being read"
    elif info.status == "failed":
        what = f"{KIND_NAMES.get(info.kind, info.kind)}, could not be read"
    return f"{info.name} ({what})"


def files_prompt(files: list[FileInfo]) -> str:
    """The system-prompt paragraph for a conversation with attached files; empty without files."""
    if not files:
        return ""
    names = "; ".join(describe(f) for f in files)
    return (
        f"The user attached these files to this conversation: {names}. Read them with list_files, "
        "read_file (by page, slide, sheet or section number) and search_files before answering questions "
        "about them, and cite what you take from a file as [file name, p. N] (or [file name, slide N], "
        "[file name, sheet NAME], [file name, SECTION HEADING]) exactly as read_file labels it."
    )


FILES_MARK = "\n\nThe user attached these files"


def with_files_prompt(messages: list[dict], library: FileLibrary | None) -> None:
    """Puts the files paragraph at the end of the transcript's system message (replacing an older one)."""
    if library is None or not messages or messages[0].get("role") != "system":
        return
    content = str(messages[0].get("content") or "").split(FILES_MARK, 1)[0]
    try:
        note = files_prompt(library.list())
    except Exception:  # the turn goes on; the file tools still list the files
        log.exception("the attached files could not be listed for the system prompt")
        return
    messages[0] = {**messages[0], "content": content + ("\n\n" + note if note else "")}
