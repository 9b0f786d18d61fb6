"""File pages: upload (the composer's XHR or a plain form), the owner's library, a file's extracted
text with its anchors, the status line a chip polls, and delete.

Every view is the owner's alone: another user's file or conversation is a 404 (ids reveal nothing),
an anonymous visitor is sent to log in. Refusals (`UploadRefused`) come back as a chip saying why,
with 413 for a file over the size limit, never as a stack trace. Bytes are served by the chat app's
attachment views (PDFs inline, for `#page=N`); this module never serves a file's bytes.
"""

from __future__ import annotations

import uuid as uuid_module

from django.apps import apps
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import services, ui
from .models import FilePart

MAX_FILES_PER_POST = 20


def _model(name: str):
    return apps.get_model("chat", name)


def _owned_file(request, uuid):
    Attachment = _model("Attachment")
    return get_object_or_404(
        Attachment.objects.select_related("text"),
        uuid=uuid,
        owner=request.user,
        origin=Attachment.Origin.UPLOAD,
    )


def _owned_conversation(request, value: str):
    """The owner's conversation named by a posted uuid; None when none is named; 404 for any other."""
    if not value:
        return None
    try:
        key = uuid_module.UUID(value)
    except ValueError:
        raise Http404("No such conversation.") from None
    return get_object_or_404(_model("Conversation"), uuid=key, owner=request.user)


def _preferences(user):
    return _model("UserPreference").objects.filter(user=user).first()


def _wants_fragment(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or bool(
        getattr(request, "htmx", False)
    )


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].upper()[:6] if "." in name else "FILE"


def _refusal_status(uploaded) -> int:
    return 413 if uploaded.size > settings.DOCUMENTS_MAX_FILE_BYTES else 400


@login_required
@require_POST
def upload(request):
    """Store the posted file(s) for the owner, in the named conversation when there is one (else in the
    library, attached when the message is sent). The composer posts one file per request and gets its
    chip back; a plain form gets the library page."""
    conversation = _owned_conversation(request, request.POST.get("conversation", ""))
    files = request.FILES.getlist("file")
    if not files:
        return _upload_answer(request, [], [("", "Choose a file to upload.", 400)])
    if len(files) > MAX_FILES_PER_POST:
        return _upload_answer(
            request, [], [("", f"Up to {MAX_FILES_PER_POST} files at a time, please.", 400)]
        )
    stored, refused = [], []
    for uploaded in files:
        try:
            stored.append(services.accept_upload(request.user, uploaded, conversation=conversation))
        except services.UploadRefused as exc:
            refused.append((uploaded.name, exc.message, _refusal_status(uploaded)))
    return _upload_answer(request, stored, refused)


def _upload_answer(request, stored, refused):
    status = 201 if stored and not refused else max((code for _, _, code in refused), default=400)
    if _wants_fragment(request):
        html = "".join(
            render_to_string("documents/partials/chip.html", {"f": ui.chip(a), "composer": True})
            for a in stored
        ) + "".join(
            render_to_string(
                "documents/partials/chip.html",
                {
                    "f": {
                        "name": name,
                        "label": _extension(name),
                        "status": "failed",
                        "error": message,
                        "final": True,
                    },
                    "composer": True,
                },
            )
            for name, message, _ in refused
        )
        return HttpResponse(html, status=status)
    if not refused:
        return redirect("documents:library")
    return _library_page(request, refused=refused, status=status)


@login_required
@require_GET
def library(request):
    """The owner's files: name, kind, size, status; open, delete."""
    return _library_page(request)


def _library_page(request, refused=(), status=200):
    files = [ui.chip(a) for a in services.library(request.user).select_related("text")]
    return render(
        request,
        "documents/library.html",
        {
            "files": files,
            "refused": refused,
            "pref": _preferences(request.user),
            "max_bytes": settings.DOCUMENTS_MAX_FILE_BYTES,
        },
        status=status,
    )


@login_required
@require_GET
def picker(request):
    """The composer's 'attach from your files' list: the owner's files that read well."""
    files = [ui.chip(a) for a in services.library(request.user).select_related("text")]
    return render(request, "documents/partials/picker.html", {"files": files})


@login_required
@require_GET
def status(request, uuid):
    """A chip's status line (a chip polls it until the file is ready or failed)."""
    attachment = _owned_file(request, uuid)
    return render(request, "documents/partials/file_status.html", {"f": ui.chip(attachment), "poll": True})


@login_required
@require_GET
def text(request, uuid):
    """The file's extracted text, part by part, with anchors `part-<index>` (and `p-<number>` for the
    first part of each page or slide) that citation links scroll to."""
    attachment = _owned_file(request, uuid)
    return _text_page(request, attachment)


def shared_text(request, token, uuid):
    """The text view of a shared conversation's file, only while it is shared with its files."""
    conversation = get_object_or_404(_model("Conversation"), share_token=token, share_files=True)
    links = apps.get_model("documents", "ConversationFile").objects.filter(conversation=conversation)
    attachment = get_object_or_404(
        _model("Attachment").objects.select_related("text"),
        uuid=uuid,
        origin=_model("Attachment").Origin.UPLOAD,
        pk__in=links.values("attachment_id"),
    )
    return _text_page(request, attachment, share_token=token)


def _text_page(request, attachment, share_token=None):
    parts, seen = [], set()
    for part in FilePart.objects.filter(attachment=attachment).order_by("index"):
        key = (part.anchor_kind, part.number)
        first_of_number = (
            part.number is not None and part.anchor_kind in ("page", "slide") and key not in seen
        )
        seen.add(key)
        parts.append({"part": part, "number_anchor": first_of_number})
    return render(
        request,
        "documents/text.html",
        {
            "f": ui.chip(attachment, share_token=share_token),
            "parts": parts,
            "share_token": share_token,
            "download_url": (
                reverse("chat:shared_attachment", args=[share_token, attachment.uuid])
                if share_token
                else reverse("chat:attachment", args=[attachment.uuid])
            ),
            "pref": _preferences(request.user) if request.user.is_authenticated else None,
        },
    )


@login_required
@require_POST
def delete(request, uuid):
    """Delete the file: its bytes, its text and its links to conversations."""
    _owned_file(request, uuid)
    services.delete_file(request.user, uuid)
    if _wants_fragment(request):
        return HttpResponse(status=204)
    return redirect("documents:library")
