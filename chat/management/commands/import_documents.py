"""Import documents into the local search corpus (`chat.models.Document`): a folder of HTML, Markdown
or text files, single files, or URLs. `--default-corpus` loads Debian's Python documentation
(package python3-doc) so offline `web_search` has real pages to find.

    python manage.py import_documents --default-corpus
    python manage.py import_documents ./notes https://example.org/page --source mine
"""

from __future__ import annotations

import glob
import re
from html import unescape
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from chat.models import Document

TEXT_SUFFIXES = {".html", ".htm", ".md", ".markdown", ".txt", ".rst"}
# Debian's python3-doc ships the HTML docs here (a symlink to the versioned python3.X-doc package).
DEFAULT_CORPUS_DIRS = [
    "/usr/share/doc/python3-doc/html",
    *sorted(glob.glob("/usr/share/doc/python3*-doc/html")),
]
PYTHON_DOCS_URL = "https://docs.python.org/3/"
# Sphinx pages that are indexes, not documents.
SKIP = re.compile(r"(^|/)(genindex[^/]*|py-modindex|search|_static|_sources|_images|_downloads)(\.html|/)")
BATCH = 100


def title_and_text_of_html(html: str, url: str) -> tuple[str, str]:
    import trafilatura

    from agent.tools.browse import html_to_markdown

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


class Command(BaseCommand):
    help = "Import HTML/Markdown/text files, folders or URLs into the local search corpus."

    def add_arguments(self, parser):
        parser.add_argument("sources", nargs="*", help="files, folders or http(s) URLs")
        parser.add_argument(
            "--default-corpus", action="store_true", help="import Debian's Python documentation"
        )
        parser.add_argument("--source", default="", help="label stored with each document")
        parser.add_argument("--base-url", default="", help="URL prefix for files (default: file:// paths)")
        parser.add_argument("--limit", type=int, default=0, help="import at most this many files per folder")
        parser.add_argument("--force", action="store_true", help="re-import the default corpus if present")

    def handle(self, *args, sources, default_corpus, source, base_url, limit, force, **options):
        if not sources and not default_corpus:
            raise CommandError("name files, folders or URLs to import, or pass --default-corpus")
        total = 0
        if default_corpus:
            # `make run` asks for it on every start; importing takes minutes, so once is enough.
            if not force and Document.objects.filter(source__in=("python-docs", "pydoc")).exists():
                self.stdout.write("The default corpus is already imported (--force re-imports it)")
            else:
                total += self.import_default_corpus(limit)
        for item in sources:
            if item.startswith(("http://", "https://")):
                total += self.import_url(item, source or "web")
            else:
                path = Path(item)
                if not path.exists():
                    raise CommandError(f"{item}: no such file or folder")
                total += self.import_folder(path, source or path.name, base_url, limit)
        self.stdout.write(
            self.style.SUCCESS(f"{total} documents imported; the corpus holds {Document.objects.count()}")
        )

    def import_default_corpus(self, limit: int) -> int:
        for folder in DEFAULT_CORPUS_DIRS:
            if Path(folder, "index.html").exists():
                self.stdout.write(f"Importing the Python documentation from {folder}")
                return self.import_folder(Path(folder), "python-docs", PYTHON_DOCS_URL, limit)
        self.stderr.write(
            "python3-doc is not installed (apt-get install python3-doc); importing the standard library's "
            "own docstrings (pydoc) instead"
        )
        return self.import_pydoc(limit)

    def import_folder(self, root: Path, source: str, base_url: str, limit: int) -> int:
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
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
        return self.save(rows)

    def import_url(self, url: str, source: str) -> int:
        from agent.tools import ToolContext, ToolError
        from agent.tools.browse import fetch

        try:
            final_url, ctype, body = fetch(url, timeout=ToolContext().timeout)
        except ToolError as exc:
            self.stderr.write(f"skipped {url}: {exc}")
            return 0
        title, text = (
            title_and_text_of_html(body, final_url) if "html" in ctype else title_and_text_of_plain(body, url)
        )
        return self.save([Document(url=url, title=title[:500] or url, text=text, source=source)])

    def import_pydoc(self, limit: int) -> int:
        import pydoc
        import sys

        names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_"))[: limit or None]
        rows = []
        for name in tqdm(names, desc="import pydoc", unit="module"):
            try:
                text = pydoc.render_doc(name, renderer=pydoc.plaintext)
            except Exception:  # a module that cannot be imported on this platform: skip it
                continue
            rows.append(
                Document(url=f"{PYTHON_DOCS_URL}library/{name}.html", title=name, text=text, source="pydoc")
            )
        return self.save(rows)

    def save(self, rows: list[Document]) -> int:
        for i in range(0, len(rows), BATCH):
            Document.objects.bulk_create(
                rows[i : i + BATCH],
                update_conflicts=True,
                unique_fields=["url"],
                update_fields=["title", "text", "source", "updated"],
            )
        return len(rows)
