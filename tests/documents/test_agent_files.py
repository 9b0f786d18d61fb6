"""The agent reads attached files: ConversationLibrary over real extracted parts in Postgres, the three
file tools (ranges, cuts, search), owner isolation, and a whole turn against the scripted border model
that asks for page 2 and cites it."""

import json
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings
from doc_files import long_pdf_bytes, pdf_bytes, upload, xlsx_bytes

from agent.client import ModelClient
from agent.files import FILES_MARK
from agent.tools import TOOLS, ToolContext, tool_schemas
from agent.tools.files import FILE_TOOLS
from chat.models import Conversation, Message, ToolCall, Turn
from chat.tasks import execute_turn, tool_context
from documents import services
from documents.library import ConversationLibrary, library_for
from documents.tasks import extract_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_queue(monkeypatch):
    monkeypatch.setattr(services, "enqueue_extraction", lambda pk: None)


def add(owner, conversation, name, data):
    a = services.accept_upload(owner, upload(name, data), conversation=conversation)
    extract_file(a.pk)
    return a


@pytest.fixture
def files(owner, conversation):
    report = add(
        owner,
        conversation,
        "report.pdf",
        pdf_bytes(["Widgets overview", "Revenue grew 42 percent in the fjord region", "Outlook is calm"]),
    )
    book = add(owner, conversation, "book.xlsx", xlsx_bytes({"Sales": [["region", "q1"], ["north", 7]]}))
    return report, book


def ctx_for(conversation, max_chars=8000):
    return ToolContext(files_library=ConversationLibrary(conversation), max_chars=max_chars)


def run(tool, conversation, max_chars=8000, **arguments):
    return get_tool_any(tool).run(arguments, ctx_for(conversation, max_chars))


def get_tool_any(name):
    return FILE_TOOLS[name]


def test_list_files(files, conversation):
    result = run("list_files", conversation)
    assert result.ok
    assert "- report.pdf (PDF, 3 pages) — pages 1-3" in result.text
    assert "- book.xlsx (Excel workbook, 1 sheet) — 1: sheet Sales" in result.text


def test_read_file_by_page_with_citations(files, conversation):
    result = run("read_file", conversation, name="report.pdf", start=2, end=2)
    assert result.ok and result.text.startswith("[report.pdf, p. 2]\nRevenue grew 42 percent")
    assert "p. 1" not in result.text and "p. 3" not in result.text
    sheet = run("read_file", conversation, name="BOOK.XLSX")  # case-insensitive, default: from the start
    assert sheet.text.startswith("[book.xlsx, sheet Sales]\nregion\tq1\nnorth\t7")


def test_read_file_cut_says_where_to_continue(owner, conversation):
    add(owner, conversation, "long.pdf", long_pdf_bytes(40))
    result = run("read_file", conversation, max_chars=600, name="long.pdf", start=5, end=30)
    assert result.ok and len(result.text) <= 600
    assert result.text.startswith("[long.pdf, p. 5]")
    shown = [n for n in range(5, 31) if f"[long.pdf, p. {n}]" in result.text]
    nxt = shown[-1] + 1
    assert f"Continue with read_file name='long.pdf' start={nxt} end=30 (pages {nxt}-30)" in result.text
    following = run("read_file", conversation, max_chars=600, name="long.pdf", start=nxt, end=30)
    assert following.text.startswith(f"[long.pdf, p. {nxt}]")


def test_a_300_page_pdf_is_read_in_parts(owner, conversation):
    add(owner, conversation, "long.pdf", long_pdf_bytes(300))
    start, seen = 1, []
    while start <= 300:
        result = run("read_file", conversation, name="long.pdf", start=start)
        assert result.ok and len(result.text) <= 8000
        pages = [n for n in range(start, 301) if f"[long.pdf, p. {n}]\n" in result.text]
        assert pages and pages[0] == start and f"word{pages[-1]}x" in result.text
        seen += pages
        if pages[-1] == 300:
            assert "Continue" not in result.text
            break
        assert f"start={pages[-1] + 1} end=300" in result.text
        start = pages[-1] + 1
    assert seen == list(range(1, 301))


def test_read_file_errors_are_for_the_model(files, conversation):
    assert "no file named 'nope.pdf'" in run("read_file", conversation, name="nope.pdf").text
    assert "has 3 pages" in run("read_file", conversation, name="report.pdf", start=9).text
    assert "whole number" in run("read_file", conversation, name="report.pdf", start="two").text


def test_search_files_ranks_and_highlights(files, conversation):
    result = run("search_files", conversation, query="revenue fjord")
    assert result.ok
    first = result.text.splitlines()[0]
    assert first.startswith("[report.pdf, p. 2]") and "**Revenue**" in first
    # not every word need match: the fallback ORs the words
    assert "[report.pdf, p. 3]" in run("search_files", conversation, query="outlook zebra").text
    assert "No passages" in run("search_files", conversation, query="submarine").text
    only_book = run("search_files", conversation, query="north", name="book.xlsx")
    assert only_book.text.startswith("[book.xlsx, sheet Sales]")


def test_a_conversation_sees_only_its_own_files(files, owner, stranger, conversation):
    other = Conversation.objects.create(owner=stranger)
    add(stranger, other, "secret.pdf", pdf_bytes(["The revenue password is swordfish"]))
    mine = run("search_files", conversation, query="swordfish password")
    assert "secret.pdf" not in mine.text and "No passages" in mine.text
    assert "no file named 'secret.pdf'" in run("read_file", conversation, name="secret.pdf").text
    theirs = run("list_files", other)
    assert "report.pdf" not in theirs.text and "secret.pdf" in theirs.text


def test_failed_and_unread_files_are_described(owner, conversation):
    a = services.accept_upload(owner, upload("queued.md", b"# Q\nlater"), conversation=conversation)
    assert "still being read" in run("list_files", conversation).text
    assert "still being read" in run("read_file", conversation, name="queued.md").text
    extract_file(a.pk)
    assert "[queued.md, # Q]" in run("read_file", conversation, name="queued.md").text


def test_file_tools_are_declared_only_with_files(files, conversation, owner):
    bare = Conversation.objects.create(owner=owner)
    assert library_for(bare) is None
    assert library_for(conversation) is not None
    assert list(TOOLS) == ["web_search", "browse", "python"]  # the default declaration is untouched


@pytest.fixture
def agent_redis():
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter(f"{settings.KIMIWEB_NAMESPACE}:turn:*"):
        client.delete(key)
    client.close()


def make_turn(conversation, question):
    message = Message.objects.create(conversation=conversation, role="user", content=question)
    return Turn.objects.create(conversation=conversation, user_message=message, thinking=True)


def test_a_turn_reads_page_2_and_cites_it(files, conversation, agent_redis):
    turn = make_turn(conversation, "How much did revenue grow?")
    script = [
        Reply(
            reasoning="Read page 2.",
            tool_calls=[("read_file", json.dumps({"name": "report.pdf", "start": 2}))],
        ),
        Reply(content="Revenue grew 42 percent [report.pdf, p. 2]."),
    ]
    with ScriptedModelServer(script) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    turn.refresh_from_db()
    assert turn.status == "done", turn.error
    first, second = server.requests
    names = [t["function"]["name"] for t in first["tools"]]
    assert names == ["web_search", "browse", "python", "list_files", "read_file", "search_files"]
    system = first["messages"][0]["content"]
    assert FILES_MARK.strip() in system and "report.pdf (PDF, 3 pages)" in system
    assert "book.xlsx (Excel workbook, 1 sheet)" in system and "[file name, p. N]" in system
    call = ToolCall.objects.get(step__turn=turn)
    assert call.name == "read_file" and call.status == "done"
    assert call.result.startswith("[report.pdf, p. 2]\nRevenue grew 42 percent")
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and "Revenue grew 42 percent" in tool_message["content"]
    answer = Message.objects.get(turn=turn, role="assistant")
    assert answer.content == "Revenue grew 42 percent [report.pdf, p. 2]."
    # The console's turn timeline says which pages the call read.
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("operator", "op@example.org", "pw-12345678"))
    page = staff.get(reverse("admin:chat_turn_change", args=[turn.pk])).content.decode()
    assert "Pages read" in page and "<li>report.pdf: p. 2, p. 3</li>" in page  # no end: to the last page


def test_a_turn_without_files_declares_the_default_tools_byte_identical(owner, agent_redis):
    conversation = Conversation.objects.create(owner=owner)
    turn = make_turn(conversation, "Hello?")
    assert tool_context(turn).files_library is None
    with ScriptedModelServer([Reply(content="Hi.")]) as server:
        execute_turn(turn.id, client=ModelClient(server.url, "scripted"))
    body = server.requests[0]
    assert json.dumps(body["tools"]) == json.dumps(tool_schemas())
    assert "attached" not in body["messages"][0]["content"]


def test_parts_shown_reads_the_citation_heads_of_file_tool_results(files, conversation):
    from agent.tools.files import parts_shown

    read = run("read_file", conversation, name="report.pdf", start=1, end=3).text
    assert parts_shown("read_file", read) == {"report.pdf": ["p. 1", "p. 2", "p. 3"]}
    found = run("search_files", conversation, query="revenue fjord").text
    assert parts_shown("search_files", found) == {"report.pdf": ["p. 2"]}
    assert parts_shown("python", read) == {}
