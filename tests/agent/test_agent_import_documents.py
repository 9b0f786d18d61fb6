"""The import_documents command fills the local corpus that offline web_search searches."""

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agent.tools import ToolContext, get_tool
from corpus.models import Document
from corpus.search import DocumentCorpus

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]


def test_a_folder_of_html_markdown_and_text_becomes_searchable_documents(tmp_path):
    (tmp_path / "guide.html").write_text(
        "<html><head><title>Gardening guide</title></head><body><article><h1>Tomatoes</h1>"
        "<p>Tomatoes need full sun, deep watering and a stake to climb. Pinch the suckers weekly.</p>"
        "</article></body></html>"
    )
    (tmp_path / "notes.md").write_text("# Compost notes\n\nTurn the compost pile every two weeks.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "plain.txt").write_text("Seed catalogue\nOrder tomato seeds in January.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    call_command(
        "import_documents", str(tmp_path), "--source", "garden", "--base-url", "https://garden.example/"
    )
    docs = {d.url: d for d in Document.objects.filter(source="garden")}
    assert set(docs) == {
        "https://garden.example/guide.html",
        "https://garden.example/notes.md",
        "https://garden.example/sub/plain.txt",
    }
    assert docs["https://garden.example/guide.html"].title == "Gardening guide"
    assert "full sun" in docs["https://garden.example/guide.html"].text
    assert docs["https://garden.example/notes.md"].title == "Compost notes"
    result = get_tool("web_search").run({"query": "tomato"}, ToolContext(corpus=DocumentCorpus()))
    assert (
        "https://garden.example/guide.html" in result.text
        and "https://garden.example/sub/plain.txt" in result.text
    )
    # Importing again updates in place.
    call_command(
        "import_documents", str(tmp_path), "--source", "garden", "--base-url", "https://garden.example/"
    )
    assert Document.objects.filter(source="garden").count() == 3


def test_the_default_corpus_is_debians_python_documentation():
    if not Path("/usr/share/doc/python3-doc/html/index.html").exists():
        pytest.skip("python3-doc is not installed (apt-get install python3-doc)")
    call_command("import_documents", "--default-corpus", "--limit", "12")
    docs = Document.objects.filter(source="python-docs")
    assert docs.count() >= 10
    assert all(d.url.startswith("https://docs.python.org/3/") for d in docs)
    assert not docs.filter(url__contains="genindex").exists()
    call_command("import_documents", "--default-corpus", "--limit", "20")
    assert Document.objects.filter(source="python-docs").count() == docs.count(), (
        "a second start imports nothing"
    )


def test_a_url_on_a_private_address_is_skipped_with_a_reason(capsys):
    call_command("import_documents", "http://127.0.0.1:5432/")
    assert "skipped http://127.0.0.1:5432/" in capsys.readouterr().err
    assert Document.objects.count() == 0


def test_nothing_to_import_is_an_error():
    with pytest.raises(CommandError):
        call_command("import_documents")
