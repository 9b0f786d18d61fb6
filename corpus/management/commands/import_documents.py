"""Import documents into the local search corpus (`corpus.models.Document`): a folder of HTML, Markdown
or text files, single files, or URLs. `--default-corpus` loads Debian's Python documentation
(package python3-doc) so offline `web_search` has real pages to find.

    python manage.py import_documents --default-corpus
    python manage.py import_documents ./notes https://example.org/page --source mine
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from corpus import services
from corpus.models import Document


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
        missing = [s for s in sources if not s.startswith(("http://", "https://")) and not Path(s).exists()]
        if missing:
            raise CommandError(f"{missing[0]}: no such file or folder")
        result = services.ImportResult()
        if default_corpus:
            # `make run` asks for it on every start; importing takes minutes, so once is enough.
            if not force and services.default_corpus_imported():
                self.stdout.write("The default corpus is already imported (--force re-imports it)")
            else:
                result.add(self.import_default_corpus(limit))
        for item in sources:
            if item.startswith(("http://", "https://")):
                result.add(services.import_url(item, source=source or "web"))
            else:
                path = Path(item)
                result.add(
                    services.import_folder(path, source=source or path.name, base_url=base_url, limit=limit)
                )
        for note in result.skipped:
            self.stderr.write(note)
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.count} documents imported; the corpus holds {Document.objects.count()}"
            )
        )

    def import_default_corpus(self, limit: int) -> services.ImportResult:
        folder = services.default_corpus_folder()
        if folder is not None:
            self.stdout.write(f"Importing the Python documentation from {folder}")
            return services.import_python_docs(folder, limit=limit)
        self.stderr.write(
            "python3-doc is not installed (apt-get install python3-doc); importing the standard library's "
            "own docstrings (pydoc) instead"
        )
        return services.import_pydoc(limit=limit)
