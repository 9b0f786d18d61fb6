"""Files tools make (figures, CSVs from the python tool): the FileSink that stores them as Attachment
rows with their bytes on the default storage, and the owner-only download views."""

from __future__ import annotations

import os

from django.core.files.base import ContentFile
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET

from agent.tools.base import StoredFile

from .models import Attachment, Conversation, Turn

MAX_NAME = 120


def safe_name(name: str) -> str:
    """A file name a browser can be handed: the last path part, printable, not empty, not too long."""
    base = os.path.basename(name.replace("\\", "/")).strip().lstrip(".")
    base = "".join(c if c.isprintable() and c not in '"<>|:*?' else "_" for c in base)
    return (base or "file")[-MAX_NAME:]


def stored_file(attachment: Attachment) -> StoredFile:
    return StoredFile(
        id=str(attachment.uuid),
        name=attachment.name,
        size=attachment.size,
        content_type=attachment.content_type,
        url=reverse("chat:attachment", args=[attachment.uuid]),
    )


class AttachmentSink:
    """Stores each file a turn's tools make for the turn's owner and conversation (ToolContext.files)."""

    def __init__(self, turn: Turn):
        self.turn = turn

    def save(self, name: str, data: bytes, content_type: str) -> StoredFile:
        name = safe_name(name)
        attachment = Attachment(
            owner_id=self.turn.conversation.owner_id,
            conversation_id=self.turn.conversation_id,
            turn=self.turn,
            origin=Attachment.Origin.TOOL,
            name=name,
            content_type=content_type or "application/octet-stream",
            size=len(data),
        )
        attachment.file.save(name, ContentFile(data), save=False)
        attachment.save()
        return stored_file(attachment)


INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


def serve(attachment: Attachment) -> FileResponse:
    """The file's bytes: images and PDFs inline (a PDF opens in the browser's viewer, at `#page=N`),
    anything else as a download; never sniffed, never run (HTML and SVG are always downloads)."""
    inline = attachment.content_type in INLINE_TYPES
    response = FileResponse(
        attachment.file.open("rb"),
        as_attachment=not inline,
        filename=attachment.name,
        content_type=attachment.content_type if inline else "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def for_share(projection, conversation) -> list[dict]:
    """Points a turn's tool files at the share link (`chat:shared_attachment`) when the conversation is
    shared with its files, or takes their links away when not; returns the turn's files in order."""
    files: list[dict] = []
    for item in getattr(projection, "items", ()):
        for f in getattr(item, "files", None) or ():
            f["url"] = (
                reverse("chat:shared_attachment", args=[conversation.share_token, f["id"]])
                if conversation.share_files
                else ""
            )
            files.append(f)
    return files


@require_GET
def download(request, uuid):
    """The owner's download; 404 for anyone else (and for anonymous visitors), so ids reveal nothing."""
    if not request.user.is_authenticated:
        raise Http404
    return serve(get_object_or_404(Attachment, uuid=uuid, owner=request.user))


@require_GET
def shared_download(request, token, uuid):
    """A file of a shared conversation, only while it is shared with its files."""
    conversation = get_object_or_404(Conversation, share_token=token, share_files=True)
    return serve(get_object_or_404(Attachment, uuid=uuid, conversation=conversation))
