"""The admin console's files list: every user's files with size and status, per-user totals, and a
delete that takes the bytes and the extracted text with the row."""

import os

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from doc_files import upload

from chat.models import Attachment
from documents import services
from documents.models import FilePart, FileText
from documents.tasks import extract_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_queue(monkeypatch, settings):
    monkeypatch.setattr(services, "enqueue_extraction", lambda pk: None)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff_client(client):
    staff = get_user_model().objects.create_superuser("operator", "op@example.org", "s3cret-pass-123")
    client.force_login(staff)
    return client


def test_files_list_shows_size_status_and_totals(staff_client, owner, conversation):
    ok = services.accept_upload(owner, upload("notes.md", b"# A\nhello <b>"), conversation=conversation)
    extract_file(ok.pk)
    bad = services.accept_upload(owner, upload("x.pdf", b"%PDF-1.4 garbage"))
    extract_file(bad.pk)
    page = staff_client.get(reverse("admin:chat_attachment_changelist")).content.decode()
    assert "notes.md" in page and "x.pdf" in page and "ready" in page and "failed" in page
    assert 'data-owner="alice"' in page and "(library)" in page
    failed = staff_client.get(reverse("admin:chat_attachment_changelist"), {"extraction": "failed"})
    assert "x.pdf" in failed.content.decode() and "notes.md" not in failed.content.decode()
    detail = staff_client.get(reverse("admin:chat_attachment_change", args=[bad.pk])).content.decode()
    assert "damaged" in detail


def test_plain_users_cannot_see_it(client, owner):
    client.force_login(owner)
    response = client.get(reverse("admin:chat_attachment_changelist"))
    assert response.status_code == 302 and "/login" in response["Location"]


def test_delete_takes_bytes_and_text(staff_client, owner):
    a = services.accept_upload(owner, upload("notes.md", b"# A\nhello"))
    extract_file(a.pk)
    path = a.file.path
    assert os.path.exists(path) and FilePart.objects.filter(attachment=a).exists()
    response = staff_client.post(reverse("admin:chat_attachment_delete", args=[a.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Attachment.objects.filter(pk=a.pk).exists()
    assert not FileText.objects.exists() and not FilePart.objects.exists()
    assert not os.path.exists(path)
