"""The admin console (staff only): conversations, turns with their full trace as a timeline, tool calls,
the document corpus with an import form, operator actions (cancel, re-run) and a statistics dashboard.

Admin classes here are thin: reads are in `console.selectors`, writes and operator actions in
`console.services` (which call the chat's and the corpus's own services), forms in `console.forms`,
charts in `console.dashboard`. The models stay in their apps, so URLs and admin names are theirs
(`admin:chat_turn_change`, `admin:corpus_document_import`).

Everything shown here was written by a user, the model or a tool, so it is untrusted: it reaches HTML
only through auto-escaping templates or `format_html`. Trace fields are read-only.
"""

from __future__ import annotations

import logging
import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from chat.attachments import serve as serve_attachment
from chat.health import sandbox_state
from chat.models import Attachment, Conversation, Message, Step, ToolCall, Turn
from corpus.models import Document

from . import dashboard, selectors, services
from .forms import DocumentImportForm
from .services import CANCELLABLE, RERUNNABLE

log = logging.getLogger(__name__)

ADMIN_CSS = "kimiweb_admin/admin.css"


# --- conversations -----------------------------------------------------------------------------------


class MessageInline(admin.StackedInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ("role", "created", "content", "reasoning", "turn_link", "superseded")
    readonly_fields = fields
    ordering = ("created", "id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="turn")
    def turn_link(self, message):
        # Uses only the foreign key column: no query per message.
        if not message.turn_id:
            return "—"
        return format_html(
            '<a href="{}">turn #{}</a>',
            reverse("admin:chat_turn_change", args=[message.turn_id]),
            message.turn_id,
        )

    @admin.display(description="superseded by")
    def superseded(self, message):
        return f"message #{message.superseded_by_id}" if message.superseded_by_id else "—"


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": (ADMIN_CSS,)}

    list_display = ("display_title", "owner", "message_count", "turn_count", "pinned", "archived", "updated")
    list_select_related = ("owner",)
    list_filter = (
        "pinned",
        "archived",
        ("owner", admin.RelatedOnlyFieldListFilter),
        ("created", admin.DateFieldListFilter),
    )
    search_fields = ("title", "owner__username", "owner__email", "messages__content")
    date_hierarchy = "created"
    fields = (
        "uuid",
        "owner",
        "title",
        "pinned",
        "archived",
        "share_token",
        "created",
        "updated",
        "turns_link",
    )
    readonly_fields = ("uuid", "owner", "share_token", "created", "updated", "turns_link")
    inlines = (MessageInline,)
    list_per_page = 50

    def get_queryset(self, request):
        return selectors.conversations_with_counts(super().get_queryset(request))

    def has_add_permission(self, request):
        return False

    @admin.display(description="title", ordering="title")
    def display_title(self, conversation):
        return conversation.title or f"(untitled) {str(conversation.uuid)[:8]}"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, conversation):
        return conversation.message_count

    @admin.display(description="turns", ordering="turn_count")
    def turn_count(self, conversation):
        return conversation.turn_count

    @admin.display(description="turns")
    def turns_link(self, conversation):
        url = reverse("admin:chat_turn_changelist") + f"?conversation__id__exact={conversation.pk}"
        return format_html('<a href="{}">All turns of this conversation</a>', url)


# --- turns -------------------------------------------------------------------------------------------


class ToolNameFilter(admin.SimpleListFilter):
    """Turns that made at least one call to the chosen tool."""

    title = "tool"
    parameter_name = "tool"

    def lookups(self, request, model_admin):
        return [(name, name) for name in selectors.tool_names()]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return selectors.turns_that_called(queryset, self.value())


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": (ADMIN_CSS,)}

    list_display = (
        "short_uuid",
        "conversation",
        "owner",
        "status",
        "thinking",
        "steps",
        "tool_call_count",
        "tokens_in",
        "tokens_out",
        "duration",
        "created",
    )
    list_display_links = ("short_uuid",)
    ordering = ("-created",)
    list_select_related = ("conversation__owner",)
    list_filter = (
        "status",
        ("conversation__owner", admin.RelatedOnlyFieldListFilter),
        ("created", admin.DateFieldListFilter),
        ToolNameFilter,
        "thinking",
    )
    search_fields = ("conversation__title", "conversation__owner__username", "user_message__content")
    date_hierarchy = "created"
    list_per_page = 50
    actions = ("cancel_turns", "rerun_turns")
    change_form_template = "admin/chat/turn/change_form.html"
    change_list_template = "admin/chat/turn/change_list.html"
    fieldsets = (
        (None, {"fields": ("uuid", "conversation", "owner", "status", "error", "question", "final_answer")}),
        ("Run", {"fields": ("thinking", "model", "steps", "tokens_in", "tokens_out")}),
        ("Timing", {"fields": ("created", "started", "finished", "duration")}),
        ("Lease", {"fields": ("lease_owner", "lease_expires"), "classes": ("collapse",)}),
    )
    readonly_fields = (
        "uuid",
        "conversation",
        "owner",
        "status",
        "error",
        "question",
        "final_answer",
        "thinking",
        "model",
        "steps",
        "tokens_in",
        "tokens_out",
        "created",
        "started",
        "finished",
        "duration",
        "lease_owner",
        "lease_expires",
    )

    def get_queryset(self, request):
        return selectors.turns_with_tool_call_counts(super().get_queryset(request))

    def get_search_results(self, request, queryset, search_term):
        """Besides the text fields, a pasted turn UUID (from a log line) finds its turn."""
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            turn_uuid = uuid.UUID(search_term.strip())
        except ValueError:
            return queryset, may_have_duplicates
        return queryset | self.get_queryset(request).filter(uuid=turn_uuid), may_have_duplicates

    def has_add_permission(self, request):
        return False

    # Trace fields are never edited by hand: the page is a view, the actions below are the only writes.
    def has_change_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return request.user.has_perm("chat.change_turn")

    @admin.display(description="turn", ordering="created")
    def short_uuid(self, turn):
        return str(turn.uuid)[:8]

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, turn):
        return turn.conversation.owner

    @admin.display(description="tool calls", ordering="tool_call_count")
    def tool_call_count(self, turn):
        return turn.tool_call_count

    @admin.display(description="duration")
    def duration(self, turn):
        return selectors.format_duration(selectors.duration_ms(turn.started, turn.finished))

    @admin.display(description="user message")
    def question(self, turn):
        return format_html(
            '<div class="kw-pre">{}</div>', Truncator(turn.user_message.content).chars(4000, truncate="…")
        )

    @admin.display(description="final answer")
    def final_answer(self, turn):
        answer = getattr(turn, "answer", None)  # select_related by get_object: no extra query
        if answer is None:
            return "—"
        return format_html(
            '<div class="kw-pre">{}</div>', Truncator(answer.content).chars(20000, truncate="…")
        )

    # --- actions ---

    @admin.action(description="Cancel selected running turns", permissions=["operate"])
    def cancel_turns(self, request, queryset):
        cancelled, skipped = services.cancel_turns(
            queryset.select_related(None).select_related("conversation")
        )
        if cancelled:
            self.message_user(request, f"Cancel requested for {cancelled} turn(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Skipped {skipped} turn(s) that were not queued or running.", messages.WARNING
            )

    @admin.action(description="Re-run selected failed turns", permissions=["operate"])
    def rerun_turns(self, request, queryset):
        created, skipped = services.rerun_turns(
            queryset.select_related(None).only(
                "id", "conversation_id", "user_message_id", "status", "thinking"
            )
        )
        if created:
            self.message_user(
                request,
                f"Queued {len(created)} new turn(s): " + ", ".join(str(t.uuid)[:8] for t in created),
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, f"Skipped {skipped} turn(s) that had not failed.", messages.WARNING)

    # --- pages ---

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        turn = self.get_object(request, object_id)
        if turn is not None:
            extra_context["timeline"] = selectors.build_timeline(turn)
            extra_context["can_cancel"] = turn.status in CANCELLABLE and self.has_operate_permission(request)
            extra_context["can_rerun"] = turn.status in RERUNNABLE and self.has_operate_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_object(self, request, object_id, from_field=None):
        # The change page shows owner, question and answer: fetch them with the turn, not one query
        # each; and the admin asks for the object twice per page, so keep it for the request.
        cache = request.__dict__.setdefault("_kimiweb_turns", {})
        if object_id not in cache:
            cache[object_id] = selectors.turn_for_page(self.get_queryset(request), object_id)
        return cache[object_id]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="chat_dashboard"),
            path("<int:turn_id>/cancel/", wrap(self.cancel_view), name="chat_turn_cancel"),
            path("<int:turn_id>/rerun/", wrap(self.rerun_view), name="chat_turn_rerun"),
            path("<int:turn_id>/files/<uuid:uuid>", wrap(self.file_view), name="chat_turn_file"),
            *super().get_urls(),
        ]

    def _operate_on(self, request, turn_id, allowed, act, done_message):
        if not self.has_operate_permission(request):
            raise PermissionDenied
        turn = get_object_or_404(Turn.objects.select_related("conversation"), pk=turn_id)
        if turn.status not in allowed:
            self.message_user(request, f"Turn is {turn.status}; nothing to do.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:chat_turn_change", args=[turn.pk]))
        result = act(turn)
        self.message_user(request, done_message(result), messages.SUCCESS)
        target = result if isinstance(result, Turn) else turn
        return HttpResponseRedirect(reverse("admin:chat_turn_change", args=[target.pk]))

    def file_view(self, request, turn_id, uuid):
        """A file a tool call of the turn made, for staff who may view turns (admin_view has already
        sent anyone not active staff to the login page)."""
        if request.method != "GET":
            raise PermissionDenied
        if not self.has_view_permission(request):
            raise PermissionDenied
        return serve_attachment(get_object_or_404(Attachment, uuid=uuid, turn_id=turn_id))

    def cancel_view(self, request, turn_id):
        return require_POST(
            lambda request: self._operate_on(
                request,
                turn_id,
                CANCELLABLE,
                services.cancel_turn,
                lambda _: "Cancel requested; the worker stops at its next check.",
            )
        )(request)

    def rerun_view(self, request, turn_id):
        return require_POST(
            lambda request: self._operate_on(
                request,
                turn_id,
                RERUNNABLE,
                services.rerun_turn,
                lambda new: f"Queued a new turn {new.uuid}.",
            )
        )(request)

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = int(request.GET.get("days", 30))
        except ValueError:
            days = 30
        days = min(max(days, 1), 366)
        board = selectors.build_dashboard(days=days)
        context = {
            **self.admin_site.each_context(request),
            "title": "Agent dashboard",
            "opts": self.opts,
            "board": board,
            "charts": dashboard.render_charts(board),
            "day_choices": (7, 30, 90),
            "sandbox": sandbox_state(),
        }
        return TemplateResponse(request, "admin/chat/dashboard.html", context)


# --- steps and tool calls ----------------------------------------------------------------------------


class ReadOnlyTraceAdmin(admin.ModelAdmin):
    """Steps and tool calls are the agent's record: viewable, never added or edited here."""

    class Media:
        css = {"all": (ADMIN_CSS,)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Step)
class StepAdmin(ReadOnlyTraceAdmin):
    list_display = (
        "__str__",
        "turn_link",
        "index",
        "finish_reason",
        "tool_call_count",
        "started",
        "finished",
    )
    list_select_related = ("turn",)
    list_filter = ("finish_reason", ("started", admin.DateFieldListFilter))
    search_fields = ("=turn__uuid",)
    readonly_fields = (
        "turn",
        "index",
        "finish_reason",
        "usage",
        "started",
        "finished",
        "reasoning",
        "content",
    )
    fields = readonly_fields
    raw_id_fields = ("turn",)

    def get_queryset(self, request):
        return selectors.steps_with_tool_call_counts(super().get_queryset(request))

    @admin.display(description="turn")
    def turn_link(self, step):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:chat_turn_change", args=[step.turn_id]),
            str(step.turn.uuid)[:8],
        )

    @admin.display(description="tool calls", ordering="tool_call_count")
    def tool_call_count(self, step):
        return step.tool_call_count


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyTraceAdmin):
    list_display = ("name", "call_id", "status", "turn_link", "step_index", "duration", "started")
    list_select_related = ("step__turn",)
    list_filter = ("name", "status", ("started", admin.DateFieldListFilter))
    search_fields = ("call_id", "name", "=step__turn__uuid")
    fields = (
        "name",
        "call_id",
        "status",
        "turn_link",
        "step_index",
        "started",
        "finished",
        "duration",
        "pretty_arguments",
        "result_text",
        "error",
    )
    readonly_fields = fields
    list_per_page = 100

    @admin.display(description="turn")
    def turn_link(self, call):
        turn = call.step.turn
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:chat_turn_change", args=[turn.pk]), str(turn.uuid)[:8]
        )

    @admin.display(description="step", ordering="step__index")
    def step_index(self, call):
        return call.step.index

    @admin.display(description="duration")
    def duration(self, call):
        return selectors.format_duration(selectors.duration_ms(call.started, call.finished))

    @admin.display(description="arguments")
    def pretty_arguments(self, call):
        text, _ = selectors.pretty_json(call.arguments)
        return format_html('<pre class="kw-pre">{}</pre>', text)

    @admin.display(description="result")
    def result_text(self, call):
        text, _ = selectors.pretty_json(call.result)
        return format_html('<pre class="kw-pre">{}</pre>', text)


# --- documents ---------------------------------------------------------------------------------------


# --- documents ---------------------------------------------------------------------------------------


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("display_title", "url", "source", "chars", "updated")
    list_filter = ("source", ("created", admin.DateFieldListFilter))
    search_fields = ("title", "url")
    fields = ("url", "title", "source", "text", "created", "updated")
    readonly_fields = ("created", "updated")
    change_list_template = "admin/corpus/document/change_list.html"
    list_per_page = 100

    def get_queryset(self, request):
        return selectors.documents_with_length(super().get_queryset(request))

    def get_search_results(self, request, queryset, search_term):
        """Title/URL substrings, plus the same indexed full-text match the offline search tool uses."""
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            queryset = queryset | selectors.documents_matching(self.get_queryset(request), search_term)
        return queryset, may_have_duplicates

    @admin.display(description="title", ordering="title")
    def display_title(self, document):
        return document.title or "(untitled)"

    @admin.display(description="characters", ordering="chars")
    def chars(self, document):
        return f"{document.chars:,}"

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "corpus_totals": selectors.corpus_totals(),
            "corpus_by_source": selectors.corpus_by_source(),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="corpus_document_import"),
            *super().get_urls(),
        ]

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = DocumentImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.import_documents(
                    files=form.cleaned_data["files"],
                    urls=form.cleaned_data["urls"],
                    source=form.cleaned_data["source"],
                )
                count, notes = result.count, result.skipped
            except Exception as exc:  # shown to the operator, and logged with its traceback
                log.exception("document import failed")
                self.message_user(request, f"Import failed: {exc}", messages.ERROR)
            else:
                level = messages.SUCCESS if count else messages.WARNING
                self.message_user(request, f"Imported {count} document(s).", level)
                for note in notes:
                    self.message_user(request, note, messages.WARNING)
                return HttpResponseRedirect(reverse("admin:corpus_document_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import documents",
            "opts": self.opts,
            "form": form,
        }
        return TemplateResponse(request, "admin/corpus/document/import.html", context)


# --- users' files ------------------------------------------------------------------------------------


class FileStatusFilter(admin.SimpleListFilter):
    title = "extraction"
    parameter_name = "extraction"

    def lookups(self, request, model_admin):
        return [(s, s) for s in ("queued", "reading", "ready", "failed")]

    def queryset(self, request, queryset):
        return queryset.filter(text__status=self.value()) if self.value() else queryset


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    """Every user's files (uploads and the files tools made): size, extraction status and its error.
    Deleting a row deletes its bytes, its extracted text and its links to conversations."""

    class Media:
        css = {"all": (ADMIN_CSS,)}

    list_display = (
        "name",
        "owner",
        "origin",
        "size_display",
        "status",
        "parts",
        "conversation_link",
        "created",
    )
    list_select_related = ("owner", "text", "conversation")
    list_filter = ("origin", FileStatusFilter, ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "owner__username", "uuid")
    date_hierarchy = "created"
    fields = (
        "uuid",
        "name",
        "owner",
        "origin",
        "content_type",
        "size_display",
        "status",
        "error",
        "parts",
        "extractor",
        "conversation_link",
        "created",
    )
    readonly_fields = fields
    change_list_template = "admin/chat/attachment/change_list.html"
    list_per_page = 100

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="size", ordering="size")
    def size_display(self, attachment):
        size = attachment.size
        if size >= 1 << 20:
            return f"{size / (1 << 20):.1f} MB"
        return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} B"

    def _text(self, attachment):
        try:
            return attachment.text
        except Exception:  # tool files have no extracted text
            return None

    @admin.display(description="status", ordering="text__status")
    def status(self, attachment):
        text = self._text(attachment)
        return text.status if text else "—"

    @admin.display(description="error")
    def error(self, attachment):
        text = self._text(attachment)
        return text.error if text else ""

    @admin.display(description="parts")
    def parts(self, attachment):
        text = self._text(attachment)
        return f"{text.parts_done}/{text.parts_total}" if text else "—"

    @admin.display(description="extractor")
    def extractor(self, attachment):
        text = self._text(attachment)
        return text.extractor if text else ""

    @admin.display(description="conversation")
    def conversation_link(self, attachment):
        if attachment.conversation_id is None:
            return "(library)"
        url = reverse("admin:chat_conversation_change", args=[attachment.conversation_id])
        return format_html('<a href="{}">{}</a>', url, attachment.conversation)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "files_by_owner": selectors.files_by_owner()}
        return super().changelist_view(request, extra_context)
