"""documents.services against the real database and storage: what is accepted, what is refused with
which message (and that nothing is stored then), attaching, listing, deleting, owner isolation."""

import uuid

import pytest
from doc_files import docx_bytes, pdf_bytes, upload, xlsx_bytes

from chat.models import Attachment
from documents import services
from documents.models import ConversationFile, FileText
from documents.services import UploadRefused

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """Extraction is enqueued on commit; these tests look at what was stored, so they record it."""
    calls = []
    monkeypatch.setattr(services, "enqueue_extraction", calls.append)
    return calls


def nothing_stored(media):
    assert Attachment.objects.count() == 0
    assert FileText.objects.count() == 0
    assert ConversationFile.objects.count() == 0
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_upload_into_a_conversation_is_stored_queued_and_enqueued(owner, conversation, media, no_worker):
    a = services.accept_upload(owner, upload("report.pdf", pdf_bytes(["hello"])), conversation=conversation)
    assert a.origin == Attachment.Origin.UPLOAD and a.conversation == conversation
    assert a.content_type == "application/pdf" and a.name == "report.pdf"
    assert a.text.status == "queued" and a.text.kind == "pdf"
    assert services.conversation_files(conversation) == [a]
    assert no_worker == [a.pk]
    assert a.file.read().startswith(b"%PDF-")


def test_library_upload_has_no_conversation(owner):
    a = services.accept_upload(owner, upload("t.xlsx", xlsx_bytes({"S": [[1, 2]]})))
    assert a.conversation is None
    assert list(services.library(owner)) == [a]


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("report.pdf", b"PK\x03\x04 not a pdf at all", "is not a PDF"),
        ("notes.docx", b"%PDF-1.4 hello", "is not a Word document"),
        ("sheet.xlsx", None, "is not a Excel workbook"),  # a real .docx renamed
        ("code.py", b"\x00\x01\x02binary", "is not a source file"),
        ("evil.exe", b"MZ", "not supported"),
        ("a\\b.txt", b"x", "looks like a path"),
        (".bashrc.txt", b"x", "looks like a path"),
        ("bad\x07name.txt", b"x", "control or invisible"),
        ("invoice\u202efdp.exe.txt", b"x", "control or invisible"),
        ("empty.txt", b"", "is empty"),
        ("noext", b"hello", "no extension"),
    ],
)
def test_refusals_have_a_message_and_store_nothing(owner, conversation, media, name, data, message):
    if data is None:
        data = docx_bytes([("H", ["p"])])
    with pytest.raises(UploadRefused) as info:
        services.accept_upload(owner, upload(name, data), conversation=conversation)
    assert message in info.value.message
    nothing_stored(media)


def test_path_in_a_name_never_leaves_the_files_folder(owner, media):
    from documents.extract.sniff import Refused, check_name

    a = services.accept_upload(owner, upload("../../etc/passwd.txt", b"x"))
    assert a.name == "passwd.txt"  # Django's upload handling keeps the last path part only
    assert a.file.path.startswith(str(media / "attachments" / str(owner.id) / str(a.uuid)))
    for name in ("../../etc/passwd.txt", "/etc/passwd.txt", "..", "a/b.pdf"):
        with pytest.raises(Refused, match="looks like a path"):
            check_name(name)


def test_size_limits_per_file_and_per_user(owner, settings, media):
    settings.DOCUMENTS_MAX_FILE_BYTES = 100
    with pytest.raises(UploadRefused, match="accepted"):
        services.accept_upload(owner, upload("big.txt", b"x" * 101))
    nothing_stored(media)
    settings.DOCUMENTS_MAX_USER_BYTES = 150
    services.accept_upload(owner, upload("a.txt", b"x" * 100))
    with pytest.raises(UploadRefused) as info:
        services.accept_upload(owner, upload("b.txt", b"y" * 60))
    assert "Delete some files" in info.value.message
    assert Attachment.objects.count() == 1


def test_zip_bomb_docx_is_refused_before_storing(owner, media, settings):
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"<w:document>" + b" " * (50 << 20) + b"</w:document>")
    with pytest.raises(UploadRefused, match="zip bomb"):
        services.accept_upload(owner, upload("bomb.docx", out.getvalue()))
    nothing_stored(media)


def test_attach_only_own_files_and_conversations(owner, stranger, conversation):
    from chat.models import Conversation

    mine = services.accept_upload(owner, upload("a.md", b"# A\nhello"))
    theirs = services.accept_upload(stranger, upload("b.md", b"# B\nsecret"))
    assert services.attach(owner, [str(mine.uuid)], conversation) == [mine]
    assert services.attach(owner, [mine.uuid], conversation) == [mine]  # idempotent
    assert ConversationFile.objects.filter(conversation=conversation).count() == 1
    for uuids in ([str(theirs.uuid)], [str(mine.uuid), str(theirs.uuid)], [str(uuid.uuid4())], ["nonsense"]):
        with pytest.raises(UploadRefused) as info:
            services.attach(owner, uuids, conversation)
        assert info.value.message == services.NOT_FOUND
    other_conv = Conversation.objects.create(owner=stranger)
    with pytest.raises(UploadRefused):
        services.attach(owner, [str(mine.uuid)], other_conv)
    with pytest.raises(UploadRefused):
        services.accept_upload(owner, upload("c.md", b"x"), conversation=other_conv)
    assert services.conversation_files(conversation) == [mine]
    assert services.conversation_files(other_conv) == []


def test_delete_file_removes_bytes_text_and_links(owner, stranger, conversation, media):
    a = services.accept_upload(owner, upload("a.txt", b"hello"), conversation=conversation)
    path = a.file.path
    with pytest.raises(UploadRefused):
        services.delete_file(stranger, a.uuid)
    services.delete_file(owner, a.uuid)
    nothing_stored(media)
    import os

    assert not os.path.exists(path)


def test_deleting_a_conversation_deletes_its_uploads_bytes(owner, conversation, media):
    a = services.accept_upload(owner, upload("a.txt", b"hello"), conversation=conversation)
    kept = services.accept_upload(owner, upload("lib.txt", b"library file"))
    services.attach(owner, [kept.uuid], conversation)
    conversation.delete()
    assert not Attachment.objects.filter(pk=a.pk).exists()
    assert list(services.library(owner)) == [kept]
    assert [p.name for p in media.rglob("*") if p.is_file()] == ["lib.txt"]


def test_owner_group_and_status_message(owner):
    a = services.accept_upload(owner, upload("a.txt", b"hello"))
    assert services.owner_group(owner.id) == f"files.{owner.id}"
    assert services.status_message(a) == {
        "type": "file.status",
        "uuid": str(a.uuid),
        "status": "queued",
        "parts_done": 0,
        "parts_total": 0,
        "error": "",
    }
