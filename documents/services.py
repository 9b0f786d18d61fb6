"""What the web side calls for uploaded documents: accept an upload, attach library files to a
conversation, list and delete them, and tell the owner's browsers how extraction goes.

The bytes are `chat.Attachment(origin=upload)` rows on the default storage (documents imports no chat
code; models come through the app registry). A refused upload stores nothing.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum

from .extract.sniff import CONTENT_TYPES, Refused, ZipLimits, check_content, check_name, kind_for
from .models import ConversationFile, FileText

log = logging.getLogger(__name__)


class UploadRefused(Exception):
    """A file that is not taken (or not found): `.message` is a sentence for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


NOT_FOUND = "That file is not in your library."


def _attachment_model():
    return apps.get_model("chat", "Attachment")


def zip_limits() -> ZipLimits:
    return ZipLimits(
        max_unzipped_bytes=settings.DOCUMENTS_MAX_UNZIPPED_BYTES, max_ratio=settings.DOCUMENTS_MAX_ZIP_RATIO
    )


def _megabytes(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n / 1024:.0f} KB"


def used_bytes(owner) -> int:
    Attachment = _attachment_model()
    total = Attachment.objects.filter(owner=owner, origin=Attachment.Origin.UPLOAD).aggregate(s=Sum("size"))
    return total["s"] or 0


def _check(owner, uploaded_file) -> tuple[str, str]:
    """(name, kind) of an acceptable upload; UploadRefused with the reason otherwise."""
    try:
        name = check_name(uploaded_file.name or "")
        kind = kind_for(name)
    except Refused as exc:
        raise UploadRefused(exc.message) from exc
    size = uploaded_file.size
    if size > settings.DOCUMENTS_MAX_FILE_BYTES:
        raise UploadRefused(
            f'"{name}" is {_megabytes(size)}; files up to {_megabytes(settings.DOCUMENTS_MAX_FILE_BYTES)} '
            "are accepted."
        )
    if size == 0:
        raise UploadRefused(f'"{name}" is empty.')
    try:
        check_content(uploaded_file, name, kind, zip_limits())
    except Refused as exc:
        raise UploadRefused(exc.message) from exc
    return name, kind


def accept_upload(owner, uploaded_file, *, conversation=None):
    """Validates and stores an uploaded file for `owner` (in `conversation` when given, else in the
    owner's library only), with its FileText(queued); extraction starts once the transaction commits.
    Returns the Attachment; raises UploadRefused (nothing stored) when the file is not acceptable."""
    Attachment = _attachment_model()
    if conversation is not None and conversation.owner_id != owner.pk:
        raise UploadRefused("That conversation is not yours.")
    name, kind = _check(owner, uploaded_file)
    uploaded_file.seek(0)
    attachment = Attachment(
        owner=owner,
        conversation=conversation,
        origin=Attachment.Origin.UPLOAD,
        name=name,
        content_type=CONTENT_TYPES[kind],
        size=uploaded_file.size,
    )
    stored = False
    try:
        with transaction.atomic():
            # One upload at a time per owner, so two parallel uploads cannot both pass the quota.
            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
            used = used_bytes(owner)
            if used + attachment.size > settings.DOCUMENTS_MAX_USER_BYTES:
                raise UploadRefused(
                    f'"{name}" does not fit: your files take {_megabytes(used)} of '
                    f"{_megabytes(settings.DOCUMENTS_MAX_USER_BYTES)}. Delete some files first."
                )
            attachment.file.save(name, uploaded_file, save=False)
            stored = True
            attachment.save()
            FileText.objects.create(attachment=attachment, kind=kind)
            if conversation is not None:
                ConversationFile.objects.create(conversation=conversation, attachment=attachment)
            transaction.on_commit(lambda: enqueue_extraction(attachment.pk))
    except BaseException:
        if stored:
            attachment.file.delete(save=False)
        raise
    return attachment


def enqueue_extraction(attachment_id: int) -> None:
    from .tasks import extract_file

    extract_file.delay(attachment_id)


def _own_conversation(owner, conversation):
    if conversation is None or conversation.owner_id != owner.pk:
        raise UploadRefused("That conversation is not yours.")


def attach(owner, uuids, conversation, *, turn=None) -> list:
    """Attaches the owner's files (by uuid) to one of the owner's conversations, all or none; a uuid
    that is not the owner's upload is refused as not found. Returns the Attachments in the given order."""
    Attachment = _attachment_model()
    _own_conversation(owner, conversation)
    if turn is not None and turn.conversation_id != conversation.pk:
        raise UploadRefused("That message is not in this conversation.")
    wanted = []
    for uuid in uuids:
        if str(uuid) not in wanted:
            wanted.append(str(uuid))
    try:
        found = {
            str(a.uuid): a
            for a in Attachment.objects.filter(owner=owner, origin=Attachment.Origin.UPLOAD, uuid__in=wanted)
        }
    except Exception as exc:  # a malformed uuid
        raise UploadRefused(NOT_FOUND) from exc
    if len(found) != len(wanted):
        raise UploadRefused(NOT_FOUND)
    files = [found[u] for u in wanted]
    with transaction.atomic():
        for attachment in files:
            link, created = ConversationFile.objects.get_or_create(
                conversation=conversation, attachment=attachment, defaults={"turn": turn}
            )
            if not created and turn is not None and link.turn_id is None:
                link.turn = turn
                link.save(update_fields=["turn"])
    return files


def conversation_files(conversation) -> list:
    """The files attached to a conversation, oldest first, each with `.text` loaded."""
    Attachment = _attachment_model()
    return list(
        Attachment.objects.filter(
            conversation_links__conversation=conversation, owner_id=conversation.owner_id
        )
        .select_related("text")
        .order_by("conversation_links__added", "conversation_links__id")
    )


def turn_files(turn) -> list:
    """The files a turn's message carried."""
    Attachment = _attachment_model()
    return list(
        Attachment.objects.filter(conversation_links__turn=turn)
        .select_related("text")
        .order_by("conversation_links__added", "conversation_links__id")
    )


def library(owner):
    """The owner's uploaded files, newest first, with `.text` loaded."""
    Attachment = _attachment_model()
    return (
        Attachment.objects.filter(owner=owner, origin=Attachment.Origin.UPLOAD)
        .select_related("text")
        .order_by("-created", "-id")
    )


def get_file(owner, uuid):
    """One of the owner's uploads; UploadRefused (not found) for anything else."""
    Attachment = _attachment_model()
    try:
        return Attachment.objects.select_related("text").get(
            owner=owner, origin=Attachment.Origin.UPLOAD, uuid=uuid
        )
    except (Attachment.DoesNotExist, ValueError, Exception) as exc:
        raise UploadRefused(NOT_FOUND) from exc


def delete_file(owner, uuid) -> None:
    """Deletes one of the owner's uploads: its bytes, text, parts and conversation links."""
    attachment = get_file(owner, uuid)
    attachment.delete()  # the post_delete handler (documents.signals) removes the bytes on commit


def owner_group(owner_id) -> str:
    return f"files.{owner_id}"


def status_message(attachment, text: FileText | None = None) -> dict:
    text = text or attachment.text
    return {
        "type": "file.status",
        "uuid": str(attachment.uuid),
        "status": text.status,
        "parts_done": text.parts_done,
        "parts_total": text.parts_total,
        "error": text.error,
    }


def notify(attachment, text: FileText | None = None) -> None:
    """Tells the owner's open pages where the file's extraction stands (group `files.<owner id>`)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(owner_group(attachment.owner_id), status_message(attachment, text))
    except Exception:  # a lost status message is not worth failing extraction for
        log.exception("file.status for %s not sent", attachment.uuid)
