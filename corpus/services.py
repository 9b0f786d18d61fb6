"""Writes to the corpus: turn files, folders, URLs, uploads and the standard library's documentation
into `Document` rows (upserted by URL). The `import_documents` command and the admin console's import
form both go through these functions.

HTML becomes markdown and URLs are fetched with the agent's web reader (`agent.tools.browse`: the
SSRF-guarded fetch and trafilatura extraction), so an imported page reads exactly as `browse` shows it.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

from tqdm import tqdm

from agent.tools.base import ToolError
from agent.tools.browse import fetch, html_to_markdown

from .models import Document

TEXT_SUFFIXES = {".html", ".htm", ".md", ".markdown", ".txt", ".rst"}
# Debian's python3-doc ships the HTML docs here (a symlink to the versioned python3.X-doc package).
DEFAULT_CORPUS_DIRS = [
    "/usr/share/doc/python3-doc/html",
    *sorted(glob.glob("/usr/share/doc/python3*-doc/html")),
]
DEFAULT_CORPUS_SOURCES = ("python-docs", "pydoc")
PYTHON_DOCS_URL = "https://docs.python.org/3/"
# Sphinx pages that are indexes, not documents.
SKIP = re.compile(r"(^|/)(genindex[^/]*|py-modindex|search|_static|_sources|_images|_downloads)(\.html|/)")
BATCH = 100
FETCH_TIMEOUT = 30.0
MAX_UPLOAD_BYTES = 20 << 20


@dataclass
class ImportResult:
    """How many documents an import wrote, and what it skipped and why (shown to whoever ran it)."""

    count: int = 0
    skipped: list[str] = field(default_factory=list)

    def add(self, other: ImportResult) -> ImportResult:
        self.count += other.count
        self.skipped += other.skipped
        return self


def title_and_text_of_html(html: str, url: str) -> tuple[str, str]:
    import trafilatura

    found = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    title = unescape(" ".join(found.group(1).split())) if found else ""
    if not title:
        meta = trafilatura.extract_metadata(html)
        title = (meta.title if meta and meta.title else "") or ""
    title = re.sub(r"\s+[—–-]\s+Python [\d.]+ documentation$", "", title).strip()
    return title, html_to_markdown(html, url)


def title_and_text_of_plain(text: str, fallback: str) -> tuple[str, str]:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:500], text
    return fallback, text


def save_documents(rows: list[Document]) -> int:
    """Upsert by URL: importing a page again replaces its title, text and source."""
    for i in range(0, len(rows), BATCH):
        Document.objects.bulk_create(
            rows[i : i + BATCH],
            update_conflicts=True,
            unique_fields=["url"],
            update_fields=["title", "text", "source", "updated"],
        )
    return len(rows)


def import_folder(root: Path, *, source: str, base_url: str = "", limit: int = 0) -> ImportResult:
    """One document per text, Markdown or HTML file under `root` (or `root` itself when it is a file)."""
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
    )
    if root.is_dir():
        files = [p for p in files if not SKIP.search(p.relative_to(root).as_posix())]
    if limit:
        files = files[:limit]
    rows = []
    for path in tqdm(files, desc=f"import {source}", unit="file", disable=len(files) < 20):
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        url = base_url + rel if base_url else path.resolve().as_uri()
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() in (".html", ".htm"):
            title, text = title_and_text_of_html(raw, url)
        else:
            title, text = title_and_text_of_plain(raw, path.stem)
        if text.strip():
            rows.append(Document(url=url, title=title[:500] or path.stem, text=text, source=source))
    return ImportResult(save_documents(rows))


def import_url(url: str, *, source: str) -> ImportResult:
    """Fetch one page through the SSRF guard; a refused or failed fetch is skipped with its reason."""
    try:
        final_url, ctype, body = fetch(url, timeout=FETCH_TIMEOUT)
    except ToolError as exc:
        return ImportResult(0, [f"skipped {url}: {exc}"])
    title, text = (
        title_and_text_of_html(body, final_url) if "html" in ctype else title_and_text_of_plain(body, url)
    )
    return ImportResult(
        save_documents([Document(url=url, title=title[:500] or url, text=text, source=source)])
    )


def import_uploads(files, *, source: str) -> ImportResult:
    """One document per uploaded file (Django `UploadedFile`s), stored under `file:///uploads/<name>`."""
    rows, skipped = [], []
    for upload in files:
        if upload.size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{upload.name} is larger than {MAX_UPLOAD_BYTES >> 20} MB")
        raw = upload.read().decode("utf-8", errors="replace")
        url = f"file:///uploads/{upload.name}"
        head = raw.lstrip()[:15].lower()
        if upload.name.lower().endswith((".html", ".htm")) or head.startswith(("<!doctype html", "<html")):
            title, text = title_and_text_of_html(raw, url)
        else:
            title, text = title_and_text_of_plain(raw, upload.name)
        if not text.strip():
            skipped.append(f"skipped {upload.name}: no readable text")
            continue
        rows.append(Document(url=url, title=title[:500] or upload.name, text=text, source=source or "upload"))
    return ImportResult(save_documents(rows), skipped)


def import_uploads_and_urls(*, files, urls, source: str) -> ImportResult:
    """The admin console's import: the uploaded files, then each URL."""
    result = import_uploads(files, source=source)
    for url in urls:
        result.add(import_url(url, source=source or "web"))
    return result


def default_corpus_imported() -> bool:
    return Document.objects.filter(source__in=DEFAULT_CORPUS_SOURCES).exists()


def default_corpus_folder() -> Path | None:
    """Where Debian's python3-doc put the Python documentation, if it is installed."""
    for folder in DEFAULT_CORPUS_DIRS:
        if Path(folder, "index.html").exists():
            return Path(folder)
    return None


def import_python_docs(folder: Path, *, limit: int = 0) -> ImportResult:
    return import_folder(folder, source="python-docs", base_url=PYTHON_DOCS_URL, limit=limit)


def import_pydoc(*, limit: int = 0) -> ImportResult:
    """The standard library's own docstrings, one document per module (when python3-doc is missing)."""
    from . import pydoc_text

    names = pydoc_text.module_names()[: limit or None]
    rows, skipped = [], []
    for name in tqdm(names, desc="import pydoc", unit="module"):
        try:
            text = pydoc_text.render(name)
        except Exception as exc:  # a module that cannot be imported on this platform
            skipped.append(f"skipped {name}: {type(exc).__name__}")
            continue
        rows.append(Document(url=pydoc_text.URL.format(name), title=name, text=text, source="pydoc"))
    return ImportResult(save_documents(rows), skipped)
