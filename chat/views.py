"""Chat pages: the conversation page, the sidebar, conversation actions, export and share links.

Views are thin: they check ownership (404 for anyone else), validate with forms and call
chat.services. Live streaming happens over the socket (chat/consumers.py); these views render the
page a socket then keeps up to date.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from documents import ui as documents_ui

from . import attachments, services
from .forms import MessageForm, PreferenceForm, RenameForm, first_error
from .fragments import TurnProjection, project_from_db
from .models import Conversation, Message, Turn

PAGE_SIZE = 30


def _client_ip(request) -> str | None:
    """The client's address as Daphne reports it (X-Forwarded-For only with --proxy-headers)."""
    return request.META.get("REMOTE_ADDR") or None


def _owned(request, uuid) -> Conversation:
    return get_object_or_404(Conversation, uuid=uuid, owner=request.user)


def _sidebar(request, current=None) -> dict:
    q = request.GET.get("q", "")
    archived = request.GET.get("archived") == "1"
    page = Paginator(services.conversations_for(request.user, q, archived), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return {"page": page, "q": q, "archived": archived, "current": current}


def _page_context(request, conversation=None, **extra) -> dict:
    pref = services.preferences(request.user)
    return {
        "sidebar": _sidebar(request, conversation),
        "pref": pref,
        "conversation": conversation,
        "upload_max_bytes": settings.DOCUMENTS_MAX_FILE_BYTES,
        **extra,
    }


def _projection(turn: Turn | None) -> TurnProjection | None:
    """Finished turns come from Postgres; a running turn starts empty and the socket replays it."""
    if turn is None:
        return None
    if turn.is_finished:
        return project_from_db(turn)
    return TurnProjection(str(turn.uuid), started=turn.started, status=turn.status)


def _exchanges(conversation, share_token: str | None = None, share_files: bool = True):
    """The visible thread, each answer linking its citations of the conversation's files and each
    question showing the files it carried (on a share, links only when its files are shared)."""
    cite = documents_ui.citations_for(conversation, share_token=share_token, links=share_files)
    uploads = documents_ui.uploads_by_turn(conversation, share_token=share_token, links=share_files)
    exchanges = services.thread(conversation)
    for ex in exchanges:
        ex.p = _projection(ex.turn)
        # An edited or regenerated question still shows the files its first version carried.
        turns = [t for t in [ex.turn] + [t for _, t in ex.earlier] if t is not None]
        chips = [c for t in reversed(turns) for c in uploads.get(t.pk, [])]
        ex.uploads = list({c["uuid"]: c for c in chips}.values())
        ex.earlier_views = [(m, project_from_db(t) if t is not None else None) for m, t in ex.earlier]
        for projection in [ex.p] + [op for _, op in ex.earlier_views]:
            if projection is not None:
                projection.cite = cite
    return exchanges


@login_required
@require_GET
def index(request):
    """A new chat: the composer; the first message creates the conversation."""
    return render(request, "chat/page.html", _page_context(request))


@login_required
@require_POST
def new_conversation(request):
    form = MessageForm(request.POST)
    if not form.is_valid():
        status = 413 if "limit" in first_error(form) else 400
        return render(
            request, "chat/page.html", _page_context(request, error=first_error(form)), status=status
        )
    conversation = Conversation.objects.create(owner=request.user)
    try:
        services.start_turn(
            request.user,
            conversation,
            form.cleaned_data["text"],
            form.cleaned_data["thinking"],
            client_ip=_client_ip(request),
            files=request.POST.getlist("files"),
        )
    except services.ChatError as exc:
        conversation.delete()
        return render(request, "chat/page.html", _page_context(request, error=exc.message), status=exc.status)
    _remember_thinking(request.user, form.cleaned_data["thinking"])
    return redirect("chat:conversation", uuid=conversation.uuid)


def _remember_thinking(user, thinking: bool) -> None:
    pref = services.preferences(user)
    if pref.long_thinking != thinking:
        pref.long_thinking = thinking
        pref.save(update_fields=["long_thinking"])


@login_required
@require_GET
def conversation(request, uuid):
    conv = _owned(request, uuid)
    return render(
        request,
        "chat/page.html",
        _page_context(request, conv, exchanges=_exchanges(conv), share_url=_share_url(request, conv)),
    )


def _share_url(request, conv) -> str:
    if not conv.share_token:
        return ""
    return request.build_absolute_uri(reverse("chat:shared", args=[conv.share_token]))


@login_required
@require_GET
def conversation_list(request):
    """The sidebar list (htmx): search, archived view, and 'load more' pages."""
    current = request.GET.get("current")
    ctx = _sidebar(request)
    ctx["current_uuid"] = current
    template = (
        "chat/partials/sidebar_items.html" if request.GET.get("page") else "chat/partials/sidebar_list.html"
    )
    return render(request, template, ctx)


@login_required
@require_POST
def rename(request, uuid):
    conv = _owned(request, uuid)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return HttpResponse(first_error(form), status=400)
    conv.title = form.cleaned_data["title"]
    conv.save(update_fields=["title"])
    return redirect("chat:conversation", uuid=conv.uuid)


@login_required
@require_POST
def toggle_pin(request, uuid):
    conv = _owned(request, uuid)
    conv.pinned = not conv.pinned
    conv.save(update_fields=["pinned"])
    return redirect("chat:conversation", uuid=conv.uuid)


@login_required
@require_POST
def toggle_archive(request, uuid):
    conv = _owned(request, uuid)
    conv.archived = not conv.archived
    conv.save(update_fields=["archived"])
    return redirect("chat:conversation", uuid=conv.uuid) if not conv.archived else redirect("chat:index")


@login_required
def delete(request, uuid):
    """GET asks for confirmation; POST deletes."""
    conv = _owned(request, uuid)
    if request.method == "POST":
        turn = services.active_turn(conv)
        if turn is not None:
            services.cancel(turn)  # stop the worker before its rows disappear
        conv.delete()
        return redirect("chat:index")
    return render(request, "chat/delete_confirm.html", _page_context(request, conv))


@login_required
@require_POST
def regenerate(request, turn_uuid):
    turn = get_object_or_404(Turn, uuid=turn_uuid, conversation__owner=request.user)
    conv = turn.conversation
    try:
        services.regenerate(
            request.user,
            conv,
            thinking=request.POST.get("thinking") == "on" or None,
            client_ip=_client_ip(request),
        )
    except services.ChatError as exc:
        return HttpResponse(exc.message, status=exc.status)
    return redirect("chat:conversation", uuid=conv.uuid)


@login_required
@require_POST
def edit_message(request, message_uuid):
    message = get_object_or_404(
        Message, uuid=message_uuid, role=Message.Role.USER, conversation__owner=request.user
    )
    form = MessageForm(request.POST)
    if not form.is_valid():
        return HttpResponse(first_error(form), status=400)
    try:
        services.edit_and_resend(
            request.user,
            message.conversation,
            message,
            form.cleaned_data["text"],
            form.cleaned_data["thinking"],
            client_ip=_client_ip(request),
        )
    except services.ChatError as exc:
        return HttpResponse(exc.message, status=exc.status)
    return redirect("chat:conversation", uuid=message.conversation.uuid)


@login_required
@require_POST
def stop(request, uuid):
    """The HTTP twin of the socket's stop action (for scripts and no-socket clients)."""
    turn = services.active_turn(_owned(request, uuid))
    if turn is not None:
        services.cancel(turn)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect("chat:conversation", uuid=uuid)


@login_required
@require_POST
def share(request, uuid):
    conv = _owned(request, uuid)
    if request.POST.get("revoke"):
        services.revoke_share(conv)
    else:
        # Unticked boxes are absent from the post: answer only, no downloads.
        conv.share_details = request.POST.get("details") == "on"
        conv.share_files = request.POST.get("files") == "on"
        conv.save(update_fields=["share_details", "share_files"])
        services.share(conv)
    return redirect(reverse("chat:conversation", args=[conv.uuid]) + "?share=1#share")


def shared(request, token):
    """The read-only view of a shared conversation: anyone with the link, nobody once it is revoked.

    Without `share_details` the page holds the questions and final answers only (no reasoning, tool
    cards, code, tool output or search results); `share_files` decides whether files can be downloaded.
    """
    conv = get_object_or_404(Conversation, share_token=token)
    exchanges = _exchanges(conv, share_token=token, share_files=conv.share_files)
    for ex in exchanges:
        ex.files = attachments.for_share(ex.p, conv)
        for _message, earlier in ex.earlier_views:
            attachments.for_share(earlier, conv)
    return render(
        request,
        "chat/shared.html",
        {
            "conversation": conv,
            "exchanges": exchanges,
            "readonly": True,
            "share_details": conv.share_details,
            "share_files": conv.share_files,
        },
    )


@login_required
@require_GET
def export(request, uuid, fmt):
    conv = _owned(request, uuid)
    if fmt not in ("md", "json"):
        raise Http404("Export as .md or .json.")
    slug = f"conversation-{conv.uuid}"
    if fmt == "json":
        response = JsonResponse(
            services.export_json(conv), json_dumps_params={"ensure_ascii": False, "indent": 2}
        )
        response["Content-Disposition"] = f'attachment; filename="{slug}.json"'
        return response
    response = HttpResponse(services.export_markdown(conv), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slug}.md"'
    return response


@login_required
@require_POST
def preferences(request):
    """Remember the Long thinking toggle and the theme (htmx posts; 204 back)."""
    form = PreferenceForm(request.POST)
    if not form.is_valid():
        return HttpResponse(first_error(form), status=400)
    pref = services.preferences(request.user)
    if request.POST.get("field") == "long_thinking":
        # The composer's toggle is named `thinking`; it is absent from the post when unchecked.
        pref.long_thinking = request.POST.get("thinking") == "on" or form.cleaned_data["long_thinking"]
    elif "long_thinking" in request.POST:
        pref.long_thinking = form.cleaned_data["long_thinking"]
    if form.cleaned_data.get("theme"):
        pref.theme = form.cleaned_data["theme"]
    pref.save()
    if request.htmx or request.headers.get("Accept") == "application/json":
        return HttpResponse(
            json.dumps({"long_thinking": pref.long_thinking, "theme": pref.theme}), status=200
        )
    return redirect(request.META.get("HTTP_REFERER") or "chat:index")
