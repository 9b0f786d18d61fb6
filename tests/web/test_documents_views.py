"""The file pages and the chat's use of files, against real Postgres, real storage and Django's
request cycle: upload answers a chip (or a chip saying why not: 400, 413), every file URL is the
owner's alone (404 for anyone else, a login redirect for visitors), PDFs open inline, uploaded HTML
never does, the text view carries the anchors citations point at, and answers link citations of
the conversation's files only. The socket's `file.status` handler is tested through the real
channel layer (Redis)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client, override_settings

from chat.models import Attachment, Conversation, Message, Turn
from chat.rendering import render_markdown
from documents import services, ui
from documents.models import ConversationFile, FilePart, FileText
from kimiweb.asgi import application

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "documents"))
from doc_files import pdf_bytes, upload  # noqa: E402

XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stored(owner, name, data, conversation=None, status="ready", parts=()):
    """An upload stored through the real service, its extraction's outcome written as the worker would."""
    attachment = services.accept_upload(owner, upload(name, data), conversation=conversation)
    FileText.objects.filter(attachment=attachment).update(
        status=status, parts_done=len(parts), parts_total=len(parts)
    )
    for index, (kind, number, label, text) in enumerate(parts):
        FilePart.objects.create(
            attachment=attachment, index=index, anchor_kind=kind, number=number, label=label, text=text
        )
    attachment.refresh_from_db()
    return attachment


def answered(conversation, question, answer) -> Turn:
    message = Message.objects.create(conversation=conversation, role="user", content=question)
    turn = Turn.objects.create(conversation=conversation, user_message=message, status="done")
    Message.objects.create(conversation=conversation, role="assistant", content=answer, turn=turn)
    return turn


REPORT = pdf_bytes(["Tides: an overview", "The Moon raises two bulges of water.", "Spring tides"])
NOTES = b"# Notes\n\nIntro.\n\n## Tides\n\nTwo a day.\n"


# -- upload --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upload_into_a_conversation_answers_its_chip_and_attaches_it(alice):
    conv = Conversation.objects.create(owner=alice)
    response = logged_in(alice).post(
        "/files/upload", {"file": upload("report.pdf", REPORT), "conversation": str(conv.uuid)}, **XHR
    )
    assert response.status_code == 201
    attachment = Attachment.objects.get(owner=alice, name="report.pdf")
    html = response.content.decode()
    assert f'data-file="{attachment.uuid}"' in html
    assert f'<input type="hidden" name="files" value="{attachment.uuid}">' in html
    assert "queued" in html and "PDF" in html
    assert f'hx-get="/files/{attachment.uuid}/status"' in html  # it polls until final
    assert ConversationFile.objects.filter(conversation=conv, attachment=attachment).exists()
    assert attachment.content_type == "application/pdf"


@pytest.mark.django_db
def test_an_upload_without_a_conversation_goes_to_the_library_only(alice):
    response = logged_in(alice).post("/files/upload", {"file": upload("notes.md", NOTES)}, **XHR)
    assert response.status_code == 201
    attachment = Attachment.objects.get(owner=alice, name="notes.md")
    assert attachment.conversation is None
    assert not ConversationFile.objects.filter(attachment=attachment).exists()


@pytest.mark.django_db
def test_a_refused_file_comes_back_as_a_chip_with_its_reason_and_nothing_is_stored(alice):
    response = logged_in(alice).post(
        "/files/upload", {"file": upload("report.pdf", b"just some text, not a PDF")}, **XHR
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "failed:" in html and "report.pdf" in html and "do not match" in html
    assert 'name="files"' not in html  # a refused file is never attached to the message
    assert "Traceback" not in html
    assert not Attachment.objects.filter(owner=alice).exists()


@pytest.mark.django_db
@override_settings(DOCUMENTS_MAX_FILE_BYTES=1000)
def test_a_file_over_the_size_limit_is_413_with_a_readable_message(alice):
    response = logged_in(alice).post("/files/upload", {"file": upload("notes.md", b"x" * 5000)}, **XHR)
    assert response.status_code == 413
    assert "files up to" in response.content.decode()
    assert not Attachment.objects.filter(owner=alice).exists()


@pytest.mark.django_db
def test_a_plain_form_upload_lands_on_the_library_page(alice):
    client = logged_in(alice)
    response = client.post("/files/upload", {"file": [upload("notes.md", NOTES), upload("a.pdf", b"nope")]})
    assert response.status_code == 400  # one refused: the page says which and why
    assert "a.pdf" in response.content.decode() and "do not match" in response.content.decode()
    page = client.get("/files/").content.decode()
    assert "notes.md" in page and "a.pdf" not in page


@pytest.mark.django_db
def test_nobody_uploads_into_someone_elses_conversation(alice, bob):
    conv = Conversation.objects.create(owner=alice)
    for value in (str(conv.uuid), "not-a-uuid"):
        response = logged_in(bob).post(
            "/files/upload", {"file": upload("notes.md", NOTES), "conversation": value}, **XHR
        )
        assert response.status_code == 404
    assert not Attachment.objects.exists()


# -- isolation -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_file_url_is_the_owners_alone(alice, bob):
    conv = Conversation.objects.create(owner=alice, share_token="tok-without-files", share_files=False)
    notes = stored(alice, "notes.md", NOTES, conv, parts=[("section", 1, "# Notes", "Intro.")])
    urls = [
        f"/files/{notes.uuid}",
        f"/files/{notes.uuid}/text",
        f"/files/{notes.uuid}/status",
    ]
    for url in urls:
        assert logged_in(alice).get(url).status_code == 200, url
        assert logged_in(bob).get(url).status_code == 404, url
    assert logged_in(bob).post(f"/files/{notes.uuid}/delete").status_code == 404
    # Anonymous visitors are sent to log in (the download answers 404: ids reveal nothing).
    anonymous = Client()
    for url in ["/files/", "/files/picker", f"/files/{notes.uuid}/text", f"/files/{notes.uuid}/status"]:
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    for url in ["/files/upload", f"/files/{notes.uuid}/delete"]:
        response = anonymous.post(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert anonymous.get(f"/files/{notes.uuid}").status_code == 404
    # A share without files shows no file text; another user's library never lists this one.
    assert anonymous.get(f"/s/tok-without-files/files/{notes.uuid}/text").status_code == 404
    assert "notes.md" not in logged_in(bob).get("/files/").content.decode()
    assert "notes.md" not in logged_in(bob).get("/files/picker").content.decode()
    assert Attachment.objects.filter(pk=notes.pk).exists()


@pytest.mark.django_db
def test_a_share_with_files_shows_the_text_view_of_its_files_only(alice):
    conv = Conversation.objects.create(owner=alice, share_token="tok-files", share_files=True)
    notes = stored(alice, "notes.md", NOTES, conv, parts=[("section", 1, "# Notes", "Intro.")])
    elsewhere = stored(alice, "other.md", NOTES, None, parts=[("section", 1, "# Other", "No.")])
    assert Client().get(f"/s/tok-files/files/{notes.uuid}/text").status_code == 200
    assert Client().get(f"/s/tok-files/files/{elsewhere.uuid}/text").status_code == 404


@pytest.mark.django_db
def test_the_owner_deletes_a_file_with_its_bytes_and_text(alice, django_capture_on_commit_callbacks):
    notes = stored(alice, "notes.md", NOTES, parts=[("section", 1, "# Notes", "Intro.")])
    path = Path(notes.file.path)
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(alice).post(f"/files/{notes.uuid}/delete")
    assert response.status_code == 302 and response["Location"] == "/files/"
    assert not Attachment.objects.filter(pk=notes.pk).exists()
    assert not FilePart.objects.filter(attachment_id=notes.pk).exists()
    assert not path.exists()


# -- serving and the text view -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_pdf_opens_inline_and_uploaded_html_is_only_ever_a_download(alice):
    report = stored(alice, "report.pdf", REPORT)
    response = logged_in(alice).get(f"/files/{report.uuid}")
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("inline")
    assert response["X-Content-Type-Options"] == "nosniff"
    page = stored(alice, "page.html", b"<html><body><script>alert(1)</script><p>Hi</p></body></html>")
    response = logged_in(alice).get(f"/files/{page.uuid}")
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.django_db
def test_the_text_view_holds_every_part_with_its_anchor(alice):
    deck = stored(
        alice,
        "notes.md",
        NOTES,
        parts=[
            ("section", 1, "# Notes", "Intro."),
            ("section", 2, "## Tides", "Two a day, <b>not</b> three."),
            ("section", 2, "## Tides", "(continued)"),
        ],
    )
    html = logged_in(alice).get(f"/files/{deck.uuid}/text").content.decode()
    for index in range(3):
        assert f'id="part-{index}"' in html
    assert "Two a day, &lt;b&gt;not&lt;/b&gt; three." in html  # the text is text, never markup


@pytest.mark.django_db
def test_pages_get_a_number_anchor_on_their_first_part(alice):
    report = stored(
        alice,
        "report.pdf",
        REPORT,
        parts=[("page", 1, "p. 1", "a"), ("page", 2, "p. 2", "b"), ("page", 2, "p. 2", "c")],
    )
    html = logged_in(alice).get(f"/files/{report.uuid}/text").content.decode()
    assert html.count('id="p-2"') == 1 and 'id="p-1"' in html


@pytest.mark.django_db
def test_a_file_still_being_read_or_failed_says_so_in_its_text_view(alice):
    failed = stored(alice, "notes.md", NOTES, status="failed")
    FileText.objects.filter(attachment=failed).update(error="The file could not be read: it is damaged.")
    html = logged_in(alice).get(f"/files/{failed.uuid}/text").content.decode()
    assert "it is damaged" in html
    status = logged_in(alice).get(f"/files/{failed.uuid}/status").content.decode()
    assert "failed: The file could not be read" in status and "hx-get" not in status  # final: no polling


# -- citations -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_answers_link_citations_of_this_conversations_files_only(alice):
    conv = Conversation.objects.create(owner=alice)
    report = stored(alice, "report.pdf", REPORT, conv, parts=[("page", n, f"p. {n}", "x") for n in (1, 2, 3)])
    notes = stored(
        alice,
        "notes.md",
        NOTES,
        conv,
        parts=[("section", 1, "# Notes", "Intro."), ("section", 2, "## Tides", "Two a day.")],
    )
    other_conv = Conversation.objects.create(owner=alice)
    stored(alice, "elsewhere.pdf", REPORT, other_conv)
    answered(
        conv,
        "What raises the tides?",
        "The Moon [report.pdf, p. 2]; see also [notes.md, ## Tides] and [elsewhere.pdf, p. 1]. "
        "Code stays code: `[report.pdf, p. 3]`.",
    )
    html = logged_in(alice).get(f"/c/{conv.uuid}/").content.decode()
    assert f'href="/files/{report.uuid}#page=2"' in html
    assert f'href="/files/{notes.uuid}/text#part-1"' in html
    assert "[elsewhere.pdf, p. 1]" in html and "elsewhere.pdf, p. 1]</a>" not in html
    assert "<code>[report.pdf, p. 3]</code>" in html


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        ("p. 3", "/f.pdf#page=3"),
        ("page 12", "/f.pdf#page=12"),
        ("pp. 2-4", "/f.pdf#page=2"),
        ("", "/f.pdf"),
    ],
)
def test_pdf_citations_open_the_page(anchor, expected):
    cite = ui.Citations([ui.CitedFile(name="Report.PDF", kind="pdf", url="/f.pdf")])
    assert cite("report.pdf", anchor) == expected


@pytest.mark.parametrize(
    ("anchor", "part"),
    [
        ("slide 2", 1),
        ("sheet Sales", 2),
        ("§ Method", 3),
        ("Method", 3),
        ("lines 45", 5),
        ("slide 99", None),
    ],
)
def test_other_citations_scroll_the_text_view_to_their_part(anchor, part):
    parts = [
        (0, "slide", 1, "slide 1"),
        (1, "slide", 2, "slide 2"),
        (2, "sheet", 1, "sheet Sales"),
        (3, "section", 1, "## Method"),
        (4, "lines", 1, "lines 1-40"),
        (5, "lines", 41, "lines 41-80"),
    ]
    cite = ui.Citations([ui.CitedFile(name="mixed.txt", kind="text", url="/t", parts=parts)])
    assert cite("mixed.txt", anchor) == ("/t" if part is None else f"/t#part-{part}")
    assert cite("unknown.txt", anchor) is None


def test_a_citation_link_is_sanitized_and_opens_in_a_new_tab():
    cite = ui.Citations([ui.CitedFile(name="a, b.pdf", kind="pdf", url="/files/x")])
    html = render_markdown("See [a, b.pdf, p. 2] and [a, b.pdf](https://example.org).", cite)
    assert '<a href="/files/x#page=2" class="cite" target="_blank" rel="noopener nofollow">' in html
    assert '<a href="https://example.org" rel="noopener nofollow">a, b.pdf</a>' in html


def test_a_bracket_citing_several_files_links_each_of_them():
    cite = ui.Citations(
        [
            ui.CitedFile(name="report.pdf", kind="pdf", url="/r"),
            ui.CitedFile(name="budget.xlsx", kind="xlsx", url="/b", parts=[(0, "sheet", 1, "sheet Monthly")]),
        ]
    )
    html = render_markdown("Both say so [report.pdf, p. 2; budget.xlsx, sheet Monthly].", cite)
    assert '[<a href="/r#page=2" class="cite"' in html and ">report.pdf, p. 2</a>; " in html
    assert '<a href="/b#part-0" class="cite"' in html and ">budget.xlsx, sheet Monthly</a>]" in html
    # One piece naming no file of the conversation: the whole bracket is read as one citation.
    html = render_markdown("See [report.pdf, p. 2; other.doc, p. 1].", cite)
    assert html.count('class="cite"') == 1 and ">[report.pdf, p. 2; other.doc, p. 1]</a>" in html


@pytest.mark.django_db
def test_a_shared_page_names_the_files_and_links_them_only_when_files_are_shared(alice):
    conv = Conversation.objects.create(owner=alice, share_token="tok", share_files=False)
    report = stored(alice, "report.pdf", REPORT, conv)
    turn = answered(conv, "Read it", "It says so [report.pdf, p. 2].")
    services.attach(alice, [report.uuid], conv, turn=turn)
    html = Client().get("/s/tok/").content.decode()
    assert "report.pdf" in html
    assert f"/files/{report.uuid}" not in html
    conv.share_files = True
    conv.save()
    html = Client().get("/s/tok/").content.decode()
    assert f'href="/s/tok/files/{report.uuid}#page=2"' in html
    assert f'href="/s/tok/files/{report.uuid}"' in html  # the question's chip


# -- sending with files --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_chat_attaches_its_library_files_to_the_first_message(alice):
    notes = stored(alice, "notes.md", NOTES)
    response = logged_in(alice).post("/c/new", {"text": "Summarize my notes", "files": [str(notes.uuid)]})
    assert response.status_code == 302
    turn = Turn.objects.get(conversation__owner=alice)
    link = ConversationFile.objects.get(attachment=notes)
    assert link.conversation == turn.conversation and link.turn == turn
    page = logged_in(alice).get(response["Location"]).content.decode()
    assert re.search(rf'class="msg-files">.*data-file="{notes.uuid}"', page, re.S)


@pytest.mark.django_db
def test_a_regenerated_question_still_shows_the_files_it_carried(alice):
    notes = stored(alice, "notes.md", NOTES)
    client = logged_in(alice)
    conv_url = client.post("/c/new", {"text": "Summarize my notes", "files": [str(notes.uuid)]})["Location"]
    first = Turn.objects.get(conversation__owner=alice)
    Turn.objects.filter(pk=first.pk).update(status="done")
    assert client.post(f"/t/{first.uuid}/regenerate").status_code == 302
    visible = Turn.objects.filter(conversation__owner=alice).latest("created")
    assert visible != first
    page = client.get(conv_url).content.decode()
    question = page[page.index(f'id="ex-{visible.user_message.uuid}"') :]
    assert f'data-file="{notes.uuid}"' in question[: question.index('class="turn"')]


@pytest.mark.django_db
def test_a_message_naming_someone_elses_file_is_refused_whole(alice, bob):
    notes = stored(alice, "notes.md", NOTES)
    response = logged_in(bob).post("/c/new", {"text": "Read this", "files": [str(notes.uuid)]})
    assert response.status_code == 400
    assert "not in your library" in response.content.decode()
    assert not Conversation.objects.filter(owner=bob).exists()
    assert not Turn.objects.exists() and not ConversationFile.objects.exists()


# -- the socket ----------------------------------------------------------------------------------


@pytest.fixture
def close_consumer_connections():
    yield
    from asgiref.sync import async_to_sync, sync_to_async
    from django.db import connections

    async_to_sync(sync_to_async(connections.close_all, thread_sensitive=True))()


def _session_cookie(user) -> bytes:
    client = logged_in(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_consumer_connections")
async def test_the_conversation_socket_shows_extraction_progress_on_the_files_chips(alice, bob):
    conv = await database_sync_to_async(Conversation.objects.create)(owner=alice)
    headers = [
        (b"origin", b"http://testserver"),
        (b"cookie", await database_sync_to_async(_session_cookie)(alice)),
    ]
    comm = WebsocketCommunicator(application, f"/ws/conversations/{conv.uuid}/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"action": "resume"})
    layer = get_channel_layer()
    message = {"type": "file.status", "uuid": "0b5f3c9e-0000-4000-8000-000000000001", "status": "reading"}
    await layer.group_send(services.owner_group(bob.pk), {**message, "parts_done": 9, "parts_total": 9})
    await layer.group_send(
        services.owner_group(alice.pk), {**message, "parts_done": 2, "parts_total": 5, "error": ""}
    )
    frame = await comm.receive_from(timeout=5)
    assert 'hx-swap-oob="outerHTML:.fstat-0b5f3c9e-0000-4000-8000-000000000001"' in frame
    assert "reading 2/5" in frame and "9/9" not in frame  # another user's progress never arrives
    await layer.group_send(
        services.owner_group(alice.pk),
        {**message, "status": "failed", "parts_done": 0, "parts_total": 0, "error": "The PDF is encrypted."},
    )
    frame = await comm.receive_from(timeout=5)
    assert "failed: The PDF is encrypted." in frame and "hx-get" not in frame
    await comm.disconnect()
