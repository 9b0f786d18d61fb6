"""Documents in a real browser: files generated here (a PDF by reportlab, an XLSX by openpyxl, a
Markdown file and a CSV) go in through the composer's file input, a drop onto the composer, a paste and
the library page; a real Celery worker extracts them (documents.extraction, the child process) while
the chips show their status; a question is answered by the border double of the model, which asks the
real `read_file` tool for page 2 and quotes what the tool returned; the citation links open the PDF at
#page=2 in Chromium's viewer and the spreadsheet's text view at its sheet."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from channels.layers import get_channel_layer
from conftest import log_in
from playwright.sync_api import expect
from test_live_stack import start_worker

from chat.models import Attachment, Conversation, ToolCall, Turn
from documents import services
from documents.models import ConversationFile, FileText

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "documents"))
from doc_files import pdf_bytes, xlsx_bytes  # noqa: E402
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = "bench/results/screens"
PAGE_TWO = "The Moon raises two bulges of water on opposite sides of the Earth."
REPORT = pdf_bytes(["Tides: an overview", PAGE_TWO, "Spring tides come with the full and new Moon."])
SALES = xlsx_bytes(
    {"Summary": [["quarter", "total"], ["Q1", 10]], "Sales": [["region", "units"], ["North", 42]]}
)
NOTES = b"# Field notes\n\nHigh water at 06:10.\n\n## Harbour\n\nTwo high tides a day.\n"
CSV = b"day,high_water\nMon,06:10\nTue,06:58\n"


def chip(page, name):
    return page.locator("#composer-files .upload-chip", has_text=name)


def drop_files(page, selector, files):
    """Drop files onto an element the way a person drags them from the desktop: a real DataTransfer
    holding real File objects, in dragenter, dragover and drop events."""
    payload = [{"name": n, "type": t, "data": base64.b64encode(d).decode()} for n, t, d in files]
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        payload,
    )
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(selector, event, {"dataTransfer": transfer})


def paste_file(page, selector, name, mime, data):
    page.evaluate(
        """([selector, name, type, data]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([Uint8Array.from(atob(data), c => c.charCodeAt(0))], name, { type }));
            document.querySelector(selector).dispatchEvent(
                new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
        }""",
        [selector, name, mime, base64.b64encode(data).decode()],
    )


def publish_from_another_thread(group: str, message: dict) -> None:
    """group_send as the worker does; Playwright's loop owns this thread, so the send runs in another."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, get_channel_layer().group_send(group, message)).result(timeout=10)


def tool_results(body) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def read_page_two_then_cite(body, n):
    """Ask the real read_file tool for page 2 of the report; then answer quoting what it returned."""
    results = tool_results(body)
    if not results:
        return Reply(
            reasoning="The report is attached; page 2 should cover it. ",
            tool_calls=[("read_file", json.dumps({"name": "report.pdf", "start": 2, "end": 2}))],
        )
    found = re.search(r"The Moon raises[^\n.]*\.", results[-1])
    quote = found.group(0) if found else "(page 2 was not in the tool's answer)"
    return Reply(
        reasoning="Page 2 answers it. ",
        content=f'The report says: "{quote}" [report.pdf, p. 2]. The North sold 42 units [sales.xlsx, sheet Sales].',
    )


def test_files_go_in_by_input_drop_and_library_are_read_and_cited_with_links_to_the_page(
    live_url, stack_db, new_page, user, page_errors
):
    with ScriptedModelServer(read_page_two_then_cite) as model:
        worker = start_worker(stack_db, model.url)
        extractor = start_worker(stack_db, model.url, queue="documents")
        try:
            page = new_page(accept_downloads=False)
            log_in(page, live_url, user)

            # The library page: a plain form upload; the file's status reaches ready there.
            page.goto(live_url + "/files/")
            page.set_input_files(
                "#library-file", files=[{"name": "notes.md", "mimeType": "text/markdown", "buffer": NOTES}]
            )
            page.click(".files-upload button[type=submit]")
            expect(page.locator(".files-table")).to_contain_text("notes.md")
            expect(page.locator(".files-table .file-status")).to_have_text("ready", timeout=60_000)
            page.screenshot(path=f"{SHOTS}/documents-library.png")

            # A new chat: the PDF through the paperclip's file input, the XLSX dropped onto the composer,
            # the notes picked from the library.
            page.goto(live_url + "/")
            page.set_input_files(
                "#file-input", files=[{"name": "report.pdf", "mimeType": "application/pdf", "buffer": REPORT}]
            )
            drop_files(
                page,
                ".composer textarea",
                [("sales.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", SALES)],
            )
            page.click(".attach-menu > summary")
            page.click('.picker [data-action="pick-file"]:has-text("notes.md")')
            for name, kind in [("report.pdf", "PDF"), ("sales.xlsx", "XLSX"), ("notes.md", "MD")]:
                expect(chip(page, name).locator(".chip-kind")).to_have_text(kind)
                expect(chip(page, name).locator(".file-status")).to_have_text("ready", timeout=60_000)
            expect(chip(page, "report.pdf")).to_contain_text("KB")
            page.screenshot(path=f"{SHOTS}/documents-composer.png")

            page.fill("#composer-text", "What raises the tides, and how did the North sell?")
            page.keyboard.press("Enter")
            page.wait_for_url(live_url + "/c/**")
            turn = Turn.objects.filter(conversation__owner=user).latest("created")
            u = turn.uuid
            question = page.locator(f"#ex-{turn.user_message.uuid} .msg-files .upload-chip")
            expect(question).to_have_count(3)
            expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done", timeout=60_000)
            report = Attachment.objects.get(owner=user, name="report.pdf")
            sales = Attachment.objects.get(owner=user, name="sales.xlsx")
            assert {link.attachment.name for link in ConversationFile.objects.filter(turn=turn)} == {
                "report.pdf",
                "sales.xlsx",
                "notes.md",
            }

            # What the tool read is the real extraction of page 2, and the answer quotes it.
            call = ToolCall.objects.get(step__turn=turn, name="read_file")
            assert PAGE_TWO in call.result
            answer = page.locator(f"#answer-{u}")
            expect(answer).to_contain_text(PAGE_TWO)

            pdf_link = answer.locator("a.cite", has_text="report.pdf, p. 2")
            expect(pdf_link).to_have_attribute("href", f"/files/{report.uuid}#page=2")
            with page.context.expect_page() as opened:
                pdf_link.click()
            viewer = opened.value
            viewer.wait_for_load_state()
            assert viewer.url == f"{live_url}/files/{report.uuid}#page=2"
            assert viewer.evaluate("document.contentType") == "application/pdf"
            viewer.wait_for_timeout(1500)  # let the viewer draw the page for the screenshot
            viewer.screenshot(path=f"{SHOTS}/documents-pdf-page-2.png")
            viewer.close()

            sheet_link = answer.locator("a.cite", has_text="sales.xlsx, sheet Sales")
            href = sheet_link.get_attribute("href")
            assert re.fullmatch(rf"/files/{sales.uuid}/text#part-\d+", href), href
            with page.context.expect_page() as opened:
                sheet_link.click()
            text_view = opened.value
            text_view.wait_for_load_state()
            target = text_view.locator(".file-part:target")
            expect(target).to_contain_text("sheet Sales")
            expect(target).to_contain_text("North")
            expect(target).to_be_in_viewport()
            text_view.screenshot(path=f"{SHOTS}/documents-text-view.png")
            text_view.close()

            # In the conversation (the socket's page), a pasted CSV uploads into it and gets ready.
            paste_file(page, "#composer-text", "tides.csv", "text/csv", CSV)
            expect(chip(page, "tides.csv").locator(".file-status")).to_have_text("ready", timeout=60_000)
            csv = Attachment.objects.get(owner=user, name="tides.csv")
            assert ConversationFile.objects.filter(conversation=turn.conversation, attachment=csv).exists()
            # Sent over the socket, the message carries it: its chip is on the question, the composer empties.
            page.fill("#composer-text", "And the CSV?")
            page.keyboard.press("Enter")
            expect(page.locator("#composer-files .upload-chip")).to_have_count(0)
            expect(page.locator(".exchange")).to_have_count(2)
            second = Turn.objects.filter(conversation=turn.conversation).latest("created")
            assert second != turn
            expect(page.locator(f"#ex-{second.user_message.uuid} .msg-files .upload-chip")).to_have_text(
                re.compile("tides.csv")
            )
            assert ConversationFile.objects.get(attachment=csv).turn == second
            expect(page.locator(f"#status-{second.uuid}")).to_have_attribute(
                "data-status", "done", timeout=60_000
            )

            page.reload()  # rebuilt from Postgres: the same chips and links
            expect(page.locator(f"#ex-{turn.user_message.uuid} .msg-files .upload-chip")).to_have_count(3)
            expect(page.locator(f"#answer-{u} a.cite")).to_have_count(2)
            page.screenshot(path=f"{SHOTS}/documents-answer.png")

            # A status the extractor publishes reaches the chip over the socket at once (its own poll,
            # a second later, brings back what Postgres says: ready).
            status = page.locator(f"#ex-{turn.user_message.uuid} .fstat-{report.uuid}")
            expect(status).to_have_text("ready")
            progress = FileText(status="reading", parts_done=2, parts_total=3, error="")
            publish_from_another_thread(
                services.owner_group(user.pk), services.status_message(report, progress)
            )
            expect(status).to_have_text("reading 2/3", timeout=900)
            expect(status).to_have_text("ready", timeout=5000)
        finally:
            worker.stop()
            extractor.stop()
    assert not page_errors, page_errors


def test_a_refused_file_shows_its_reason_and_a_removed_upload_is_deleted(
    live_url, new_page, user, page_errors
):
    page = new_page()
    log_in(page, live_url, user)
    page.set_input_files(
        "#file-input",
        files=[{"name": "report.pdf", "mimeType": "application/pdf", "buffer": b"plain text, no PDF"}],
    )
    status = chip(page, "report.pdf").locator(".file-status")
    expect(status).to_contain_text("failed:")
    expect(status).to_contain_text("do not match the .pdf extension")
    expect(chip(page, "report.pdf").locator('input[name="files"]')).to_have_count(0)
    assert not Attachment.objects.filter(owner=user).exists()
    chip(page, "report.pdf").locator(".chip-remove").click()
    expect(page.locator("#composer-files .upload-chip")).to_have_count(0)
    # A file uploaded for a message and removed before sending is deleted, bytes and all.
    page.set_input_files(
        "#file-input", files=[{"name": "notes.md", "mimeType": "text/markdown", "buffer": NOTES}]
    )
    expect(chip(page, "notes.md").locator('input[name="files"]')).to_have_count(1)
    notes = Attachment.objects.get(owner=user, name="notes.md")
    with page.expect_response(f"**/files/{notes.uuid}/delete") as deleted:
        chip(page, "notes.md").locator(".chip-remove").click()
    assert deleted.value.status == 204
    assert not Attachment.objects.filter(owner=user).exists()
    # Logged out in another tab: the chip says so instead of storing anything.
    page.context.clear_cookies()
    page.set_input_files(
        "#file-input", files=[{"name": "notes.md", "mimeType": "text/markdown", "buffer": NOTES}]
    )
    expect(chip(page, "notes.md").locator(".file-status")).to_contain_text("you were logged out")
    assert not Attachment.objects.filter(owner=user).exists()
    answered = re.compile(r"Failed to load resource: the server responded with a status of 40[03] ")
    assert not [e for e in page_errors if not answered.match(e)], page_errors  # the refusals' own 400/403


def test_a_300_page_pdf_shows_its_reading_progress_on_the_chip(
    live_url, stack_db, new_page, user, page_errors
):
    lines = "\n".join(f"Line {n}: high water 06:{n:02d}, low water 12:{n:02d}." for n in range(40))
    book = pdf_bytes([f"Tide tables, day {day}\n{lines}" for day in range(1, 301)])
    conversation = Conversation.objects.create(owner=user, title="Tide tables")
    with ScriptedModelServer(lambda body, n: Reply(content="(unused)")) as model:
        worker = start_worker(stack_db, model.url)
        extractor = start_worker(stack_db, model.url, queue="documents")
        try:
            page = new_page()
            log_in(page, live_url, user)
            page.goto(f"{live_url}/c/{conversation.uuid}/")
            # Every status line the chip shows, in order (a socket push or the chip's own poll).
            page.evaluate(
                """() => {
                    window.seen = [];
                    new MutationObserver(() => {
                        for (const el of document.querySelectorAll("#composer-files .file-status")) {
                            if (window.seen[window.seen.length - 1] !== el.textContent) window.seen.push(el.textContent);
                        }
                    }).observe(document.body, { subtree: true, childList: true, characterData: true });
                }"""
            )
            page.set_input_files(
                "#file-input", files=[{"name": "tides.pdf", "mimeType": "application/pdf", "buffer": book}]
            )
            expect(chip(page, "tides.pdf").locator(".file-status")).to_have_text("ready", timeout=120_000)
            seen = page.evaluate("window.seen")
            progress = [s for s in seen if re.fullmatch(r"reading \d+/300", s)]
            assert progress, seen
            done = [int(s.split()[1].split("/")[0]) for s in progress]
            assert done == sorted(done) and any(0 < n < 300 for n in done), seen  # N/M moves on, live
            assert seen.index(progress[0]) < seen.index("ready")
            assert FileText.objects.get(attachment__name="tides.pdf").parts_total == 300
        finally:
            worker.stop()
            extractor.stop()
    assert not page_errors, page_errors
