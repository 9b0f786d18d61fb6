"""Extraction through the real task function and the real limited child process, per format; hostile
files end failed with their message and no parts; progress reaches the owner's channel group."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from doc_files import (
    docx_bytes,
    encrypted_pdf_bytes,
    long_pdf_bytes,
    pdf_bytes,
    pptx_bytes,
    upload,
    xlsx_bytes,
)

from documents import services
from documents.models import FilePart, FileText
from documents.tasks import extract_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_queue(monkeypatch):
    """The task runs in-process here (its child process is real); test_worker.py uses a real worker."""
    monkeypatch.setattr(services, "enqueue_extraction", lambda pk: None)


def extracted(owner, name, data, conversation=None):
    a = services.accept_upload(owner, upload(name, data), conversation=conversation)
    extract_file(a.pk)
    a.text.refresh_from_db()
    return a, list(FilePart.objects.filter(attachment=a).order_by("index"))


def test_pdf_per_page(owner):
    a, parts = extracted(
        owner, "report.pdf", pdf_bytes(["Introduction to widgets", "Revenue grew 42 percent"])
    )
    assert a.text.status == "ready", a.text.error
    assert [(p.anchor_kind, p.number, p.label) for p in parts] == [("page", 1, "p. 1"), ("page", 2, "p. 2")]
    assert "Revenue grew 42 percent" in parts[1].text
    assert a.text.parts_done == a.text.parts_total == 2
    assert a.text.extractor.startswith("pypdf ")
    assert a.text.chars == sum(len(p.text) for p in parts)
    assert a.text.started and a.text.finished


def test_docx_by_heading(owner):
    data = docx_bytes(
        [("Scope", ["The study covers Norway."]), ("Findings", ["Fjords are deep.", "Very deep."])]
    )
    a, parts = extracted(owner, "study.docx", data)
    assert a.text.status == "ready", a.text.error
    assert [p.label for p in parts] == ["# Scope", "# Findings"]
    assert "Fjords are deep." in parts[1].text and parts[1].anchor_kind == "section"


def test_pptx_per_slide(owner):
    a, parts = extracted(owner, "deck.pptx", pptx_bytes([("Plan", "Ship in May"), ("Risks", "Supply chain")]))
    assert a.text.status == "ready", a.text.error
    assert [(p.label, p.number) for p in parts] == [("slide 1", 1), ("slide 2", 2)]
    assert "Supply chain" in parts[1].text


def test_xlsx_per_sheet_with_bounded_rows(owner, settings):
    settings.DOCUMENTS_MAX_SHEET_ROWS = 3
    rows = [["region", "q1"]] + [[f"r{i}", i] for i in range(10)]
    a, parts = extracted(owner, "book.xlsx", xlsx_bytes({"Sales": rows, "Notes": [["hello"]]}))
    assert a.text.status == "ready", a.text.error
    assert [p.label for p in parts] == ["sheet Sales", "sheet Notes"]
    assert parts[0].text.startswith("region\tq1\nr0\t0\nr1\t1")
    assert "only the first 3 rows" in parts[0].text and "r5" not in parts[0].text


def test_csv_markdown_html_and_code(owner):
    a, parts = extracted(owner, "data.csv", b"city,pop\nOslo,700000\nBergen,290000\n")
    assert a.text.status == "ready" and parts[0].label == "rows 2-3" and "Bergen\t290000" in parts[0].text
    a, parts = extracted(owner, "notes.md", b"# Alpha\none\n```\n# not a heading\n```\n## Beta\ntwo\n")
    assert [p.label for p in parts] == ["# Alpha", "## Beta"] and "# not a heading" in parts[0].text
    html = (
        b"<html><body><article><h1>Guide</h1><p>"
        + b"Careful reading of the guide text. " * 5
        + b"</p></article></body></html>"
    )
    a, parts = extracted(owner, "page.html", html)
    assert a.text.status == "ready", a.text.error
    assert a.text.extractor.startswith("trafilatura") and "Careful reading" in parts[0].text
    code = "\n".join(f"x{i} = {i}" for i in range(300)).encode()
    a, parts = extracted(owner, "gen.py", code)
    assert [p.label for p in parts] == ["lines 1-120", "lines 121-240", "lines 241-300"]
    assert parts[2].number == 241 and parts[2].text.startswith("x240 = 240")


def test_long_page_is_chunked_keeping_its_anchor(owner):
    text = "\n".join(f"line {i} " + "word " * 12 for i in range(200))
    a, parts = extracted(owner, "long.md", ("# Only\n" + text).encode())
    assert len(parts) > 2 and all(len(p.text) <= 4000 for p in parts)
    assert {p.label for p in parts} == {"# Only"} and [p.index for p in parts] == list(range(len(parts)))
    assert a.text.parts_total == 1


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("locked.pdf", encrypted_pdf_bytes(), "encrypted with a password"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nthis is not a pdf\n%%EOF", "damaged"),
        ("blank.pdf", pdf_bytes([""]), "No text was found"),
    ],
)
def test_hostile_pdfs_fail_with_their_message_and_no_parts(owner, name, data, message):
    a, parts = extracted(owner, name, data)
    assert a.text.status == "failed" and message in a.text.error
    assert parts == [] and a.text.chars == 0


def test_pdf_with_only_an_owner_password_is_read(owner):
    a, parts = extracted(owner, "owner-only.pdf", encrypted_pdf_bytes("Open to read", password=""))
    assert a.text.status == "ready", a.text.error
    assert "Open to read" in parts[0].text


def test_too_many_pages_and_sheets(owner, settings):
    settings.DOCUMENTS_MAX_PAGES = 3
    a, parts = extracted(owner, "big.pdf", long_pdf_bytes(4))
    assert a.text.status == "failed" and "4 pages; at most 3" in a.text.error and parts == []
    settings.DOCUMENTS_MAX_SHEETS = 2
    a, parts = extracted(owner, "wide.xlsx", xlsx_bytes({"a": [[1]], "b": [[2]], "c": [[3]]}))
    assert a.text.status == "failed" and "3 sheets; at most 2" in a.text.error


def test_timeout_kills_the_child_and_fails_the_file(owner, settings):
    settings.DOCUMENTS_EXTRACT_SECONDS = 1
    # 2000 pages (the page limit) take several seconds to read even on a fast machine.
    a, parts = extracted(owner, "slow.pdf", long_pdf_bytes(2000))
    # Whichever limit stops it first: the CPU-time limit or the wall-clock deadline.
    stopped = ("took longer than 1 s; it was stopped", "used more CPU time than allowed; it was stopped")
    assert a.text.status == "failed" and any(m in a.text.error for m in stopped) and parts == []


def test_memory_limit_fails_the_file_not_the_worker(owner, settings):
    settings.DOCUMENTS_EXTRACT_MEMORY_BYTES = 64 << 20  # less than reading 24 MB of text takes
    a, parts = extracted(owner, "big.txt", ("hello world " * 10 + "\n").encode() * 200_000)
    assert a.text.status == "failed" and parts == []
    assert a.text.error == "Reading the file needs more memory than is allowed."


def test_zip_bomb_found_at_extraction(owner, settings, tmp_path):
    """A file accepted under looser limits is still checked by the child before it opens the zip."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", b"<workbook>" + b" " * (8 << 20) + b"</workbook>")
    settings.DOCUMENTS_MAX_ZIP_RATIO = 100_000
    a = services.accept_upload(owner, upload("bomb.xlsx", out.getvalue()))
    settings.DOCUMENTS_MAX_ZIP_RATIO = 200
    extract_file(a.pk)
    a.text.refresh_from_db()
    assert a.text.status == "failed" and "zip bomb" in a.text.error
    assert not FilePart.objects.filter(attachment=a).exists()


def test_redelivered_task_does_not_redo_a_ready_file(owner):
    a, parts = extracted(owner, "a.md", b"# A\nhello")
    assert extract_file(a.pk) == "ready"
    assert FilePart.objects.filter(attachment=a).count() == len(parts) == 1


def test_deleted_file_is_gone(owner):
    a = services.accept_upload(owner, upload("a.md", b"# A\nhello"))
    pk = a.pk
    services.delete_file(owner, a.uuid)
    assert extract_file(pk) == "gone"
    assert not FileText.objects.exists()


def test_300_page_pdf_with_progress_on_the_owner_group(owner):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(services.owner_group(owner.id), channel)
    a, parts = extracted(owner, "long.pdf", long_pdf_bytes(300))
    assert a.text.status == "ready", a.text.error
    assert len(parts) == 300 and parts[299].label == "p. 300" and "word300x" in parts[299].text
    seen = []

    async def drain():
        import asyncio

        while True:
            try:
                seen.append(await asyncio.wait_for(layer.receive(channel), 0.5))
            except TimeoutError:
                return

    async_to_sync(drain)()
    assert all(m["type"] == "file.status" and m["uuid"] == str(a.uuid) for m in seen)
    statuses = [m["status"] for m in seen]
    assert statuses[0] == "reading" and statuses[-1] == "ready"
    done = [m["parts_done"] for m in seen if m["status"] == "reading" and m["parts_total"] == 300]
    assert done == sorted(done) and len(done) >= 2  # live progress between start and end
    assert seen[-1]["parts_done"] == seen[-1]["parts_total"] == 300


def test_too_many_slides_and_a_docx_table(owner, settings):
    import io

    import docx

    settings.DOCUMENTS_MAX_PAGES = 2
    a, parts = extracted(owner, "deck.pptx", pptx_bytes([("a", "1"), ("b", "2"), ("c", "3")]))
    assert a.text.status == "failed" and "3 slides; at most 2" in a.text.error and parts == []
    d = docx.Document()
    d.add_heading("Prices", level=2)
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("item", "price"), ("tea", "3")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    out = io.BytesIO()
    d.save(out)
    a, parts = extracted(owner, "prices.docx", out.getvalue())
    assert a.text.status == "ready", a.text.error
    assert parts[0].label == "## Prices" and "item\tprice\ntea\t3" in parts[0].text
