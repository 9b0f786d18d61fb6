"""The document corpus in the console: counts on the list, an import form for files and URLs that
upserts documents, full-text search over them, and untrusted titles shown as text."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from corpus.models import Document

pytestmark = pytest.mark.django_db


def _import(client, **data):
    return client.post(reverse("admin:corpus_document_import"), data, follow=True)


def test_document_list_shows_corpus_counts_by_source(staff_client):
    Document.objects.create(url="https://a.org/1", title="One", text="alpha " * 10, source="wiki")
    Document.objects.create(url="https://a.org/2", title="Two", text="beta", source="wiki")
    Document.objects.create(url="https://b.org/1", title="<b>Three</b>", text="gamma", source="news")
    html = staff_client.get(reverse("admin:corpus_document_changelist")).content.decode()
    assert '<strong data-count="documents">3</strong>' in html
    assert '<strong data-count="characters">69</strong>' in html
    assert "<td>wiki</td><td>2</td>" in html and "<td>news</td><td>1</td>" in html
    assert "&lt;b&gt;Three&lt;/b&gt;" in html and "<b>Three</b>" not in html
    assert reverse("admin:corpus_document_import") in html


def test_document_search_uses_the_full_text_index(staff_client):
    Document.objects.create(
        url="https://a.org/moe", title="Mixture of experts", text="Routed experts are quantized."
    )
    Document.objects.create(url="https://a.org/cats", title="Cats", text="Cats sleep a lot.")
    html = staff_client.get(
        reverse("admin:corpus_document_changelist"), {"q": "quantize expert"}
    ).content.decode()
    assert "Mixture of experts" in html and "https://a.org/cats" not in html


def test_importing_files_creates_documents_and_reimporting_updates_them(staff_client):
    text_file = SimpleUploadedFile(
        "notes.md", b"# Release notes\n\nVersion 2 adds streaming.", "text/markdown"
    )
    html_file = SimpleUploadedFile(
        "page.html",
        b"<html><head><title>Kernel guide</title></head><body><article><h1>Kernel guide</h1>"
        b"<p>The fused MoE kernel dequantizes int4 weights on the fly, group by group.</p>"
        b"<p>It keeps activations in bf16.</p></article></body></html>",
        "text/html",
    )
    response = _import(staff_client, files=[text_file, html_file], source="manual")
    assert "Imported 2 document(s)." in response.content.decode()
    notes = Document.objects.get(url="file:///uploads/notes.md")
    assert (notes.title, notes.source) == ("Release notes", "manual")
    guide = Document.objects.get(url="file:///uploads/page.html")
    assert guide.title == "Kernel guide"
    assert "dequantizes int4 weights" in guide.text and "<p>" not in guide.text

    again = SimpleUploadedFile("notes.md", b"# Release notes\n\nVersion 3.", "text/markdown")
    _import(staff_client, files=[again], source="manual")
    assert Document.objects.count() == 2
    assert Document.objects.get(url="file:///uploads/notes.md").text.endswith("Version 3.")


def test_import_form_rejects_non_http_urls_and_empty_submissions(staff_client):
    response = _import(staff_client, urls="javascript:alert(1)\nftp://example.org/x")
    assert "Not an http(s) URL" in response.content.decode()
    response = _import(staff_client, urls="", source="x")
    assert "Choose files to upload or list URLs to fetch." in response.content.decode()
    assert Document.objects.count() == 0


def test_url_import_goes_through_the_ssrf_guard(staff_client):
    # A loopback address is never fetched: the guard refuses it and the operator is told why.
    response = _import(staff_client, urls="http://127.0.0.1:9/secret")
    html = response.content.decode()
    assert "Imported 0 document(s)." in html
    assert "Skipped http://127.0.0.1:9/secret: refused" in html
    assert Document.objects.count() == 0


def test_old_links_to_the_documents_admin_land_on_the_corpus_app(staff_client):
    response = staff_client.get("/admin/chat/document/import/?x=1")
    assert response.status_code == 301
    assert response["Location"] == reverse("admin:corpus_document_import") + "?x=1"
