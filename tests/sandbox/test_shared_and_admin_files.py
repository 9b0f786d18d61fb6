"""Tool files on the shared page (share links when shared with files, names only when not, listed under
the answer when the tool cards are kept back) and in the admin timeline (a staff-only download)."""

import importlib.util
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from chat.attachments import AttachmentSink
from chat.models import Attachment, Message, ToolCall

_spec = importlib.util.spec_from_file_location(
    "admin_fixtures", Path(__file__).resolve().parent.parent / "admin" / "conftest.py"
)
_admin_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_admin_fixtures)
make_turn = _admin_fixtures.make_turn  # the admin tests' turn-with-trace builder

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
CSV = b"x,y\n1,1\n2,4\n"


@pytest.fixture
def filed_turn(db, settings, tmp_path):
    """A finished turn whose python call made a figure and a CSV, stored and linked as a turn's are."""
    settings.MEDIA_ROOT = str(tmp_path)
    owner = get_user_model().objects.create_user("owner", password="pw-owner-123")
    turn = make_turn(
        owner,
        question="plot the squares",
        title="files",
        steps=[
            {"tool_calls": [{"name": "python", "arguments": '{"code": "plot()"}', "result": "ok"}]},
            {"content": "Here they are."},
        ],
    )
    Message.objects.create(
        conversation=turn.conversation, role=Message.Role.ASSISTANT, content="Here they are.", turn=turn
    )
    sink = AttachmentSink(turn)
    files = [sink.save("figure-1.png", PNG, "image/png"), sink.save("squares.csv", CSV, "text/csv")]
    call = ToolCall.objects.get(step__turn=turn)
    Attachment.objects.filter(uuid__in=[f.id for f in files], turn=turn).update(tool_call=call)
    return turn, {f.name: f for f in files}


def _share(conversation, *, details, files):
    conversation.share_token = "tok-shared-files"
    conversation.share_details = details
    conversation.share_files = files
    conversation.save()
    return "/s/tok-shared-files/"


def _links(html):
    """Links to single files (the owner's library page, /files/, is not a file)."""
    return set(re.findall(r'(?:href|src)="([^"]*/files/[^"/]+)"', html))


@pytest.mark.parametrize("details,files", [(True, True), (True, False), (False, True), (False, False)])
def test_the_shared_page_links_files_through_the_share_or_not_at_all(client, filed_turn, details, files):
    turn, made = filed_turn
    page = _share(turn.conversation, details=details, files=files)
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "figure-1.png" in html and "squares.csv" in html  # the page says what files there are
    assert "Here they are." in html
    assert ("tool-python" in html) is details  # tool cards only when details are shared
    for f in made.values():
        assert f'"{f.url}"' not in html  # never the owner's URL
    shared = {f"{page}files/{f.id}" for f in made.values()}
    if not files:
        assert _links(html) == set()
        for url in shared:
            assert client.get(url).status_code == 404
        return
    assert _links(html) == shared
    assert f'<img src="{page}files/{made["figure-1.png"].id}"' in html
    image = client.get(f"{page}files/{made['figure-1.png'].id}")
    assert image.status_code == 200 and b"".join(image.streaming_content) == PNG
    download = client.get(f"{page}files/{made['squares.csv'].id}")
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == CSV


def test_the_owner_page_keeps_owner_links(client, filed_turn):
    turn, made = filed_turn
    _share(turn.conversation, details=True, files=True)
    client.force_login(turn.conversation.owner)
    html = client.get(reverse("chat:conversation", args=[turn.conversation.uuid])).content.decode()
    assert _links(html) == {f.url for f in made.values()}


def test_the_admin_timeline_lists_files_and_only_staff_download_them(client, filed_turn):
    turn, made = filed_turn
    staff = get_user_model().objects.create_superuser("operator", "op@example.org", "s3cret-pass-123")
    client.force_login(staff)
    html = client.get(reverse("admin:chat_turn_change", args=[turn.pk])).content.decode()
    csv_url = reverse("admin:chat_turn_file", args=[turn.pk, made["squares.csv"].id])
    png_url = reverse("admin:chat_turn_file", args=[turn.pk, made["figure-1.png"].id])
    assert f'<a href="{csv_url}">squares.csv</a>' in html and f'<a href="{png_url}">figure-1.png</a>' in html
    assert "text/csv" in html and "image/png" in html and "12\xa0bytes" in html
    response = client.get(csv_url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == CSV
    other = make_turn(staff, title="other")
    assert (
        client.get(reverse("admin:chat_turn_file", args=[other.pk, made["squares.csv"].id])).status_code
        == 404
    )
    assert client.post(csv_url).status_code == 403

    # the file's owner is not staff: the admin sends them to its login page, never the bytes
    client.force_login(turn.conversation.owner)
    refused = client.get(csv_url)
    assert refused.status_code == 302 and reverse("admin:login") in refused["Location"]
    client.logout()
    refused = client.get(csv_url)
    assert refused.status_code == 302 and reverse("admin:login") in refused["Location"]

    # staff without the permission to view turns are refused too
    clerk = get_user_model().objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    assert client.get(csv_url).status_code == 403
