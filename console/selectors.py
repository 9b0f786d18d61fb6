"""Reads for the admin console: list annotations, a turn's timeline, the corpus's totals, and the
dashboard's statistics (aggregated in Postgres: a handful of GROUP BY queries, no per-row Python work)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, Length, TruncDay
from django.utils import timezone

from agent.tools.files import parts_shown
from chat.models import Attachment, Message, Step, ToolCall, Turn
from corpus.models import Document

# --- lists and the timeline ----------------------------------------------------------------------


def count_of(model, fk: str, **filters) -> Coalesce:
    """A correlated COUNT subquery: counts per row without joining (and multiplying) other relations."""
    counted = (
        model.objects.filter(**{fk: OuterRef("pk")}, **filters)
        .order_by()
        .values(fk)
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def pretty_json(text: str) -> tuple[str, bool]:
    """Indented JSON when `text` parses as JSON, else the raw text; and whether it parsed."""
    if not text:
        return "", False
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
    except (ValueError, TypeError):
        return text, False


def duration_ms(start, end) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000)


def conversations_with_counts(queryset):
    return queryset.annotate(
        message_count=count_of(Message, "conversation"), turn_count=count_of(Turn, "conversation")
    )


def turns_with_tool_call_counts(queryset):
    return queryset.annotate(tool_call_count=count_of(ToolCall, "step__turn"))


def steps_with_tool_call_counts(queryset):
    return queryset.annotate(tool_call_count=count_of(ToolCall, "step"))


def tool_names(limit: int = 100) -> list[str]:
    return list(ToolCall.objects.order_by("name").values_list("name", flat=True).distinct()[:limit])


def turns_that_called(queryset, tool_name: str):
    """Turns that made at least one call to `tool_name`."""
    return queryset.filter(Exists(ToolCall.objects.filter(step__turn=OuterRef("pk"), name=tool_name)))


def turn_for_page(queryset, object_id) -> Turn | None:
    """The turn with what its change page shows (owner, question, answer) in the same query."""
    try:
        return queryset.select_related("conversation__owner", "user_message", "answer").get(pk=int(object_id))
    except (Turn.DoesNotExist, ValueError, TypeError):
        return None


def build_timeline(turn: Turn) -> dict:
    """The turn's steps in order, each with its tool calls in order and the files each call made:
    exactly three queries, whatever the size."""
    steps = list(Step.objects.filter(turn_id=turn.pk).order_by("index", "id"))
    files_by_call: dict[int, list[Attachment]] = {}
    for attachment in Attachment.objects.filter(turn_id=turn.pk, tool_call__isnull=False).only(
        "uuid", "name", "size", "content_type", "tool_call_id", "created"
    ):
        files_by_call.setdefault(attachment.tool_call_id, []).append(attachment)
    calls_by_step: dict[int, list[dict]] = {step.id: [] for step in steps}
    status_counts: dict[str, int] = {}
    name_counts: dict[str, int] = {}
    for call in ToolCall.objects.filter(step__turn_id=turn.pk).order_by("step__index", "index", "id"):
        arguments, arguments_json = pretty_json(call.arguments)
        result, result_json = pretty_json(call.result)
        ms = duration_ms(call.started, call.finished)
        calls_by_step.setdefault(call.step_id, []).append(
            {
                "call": call,
                "arguments": arguments,
                "arguments_json": arguments_json,
                "result": result,
                "result_json": result_json,
                "duration": format_duration(ms),
                "files": files_by_call.get(call.id, []),
                "parts_read": [
                    f"{name}: {', '.join(labels)}"
                    for name, labels in parts_shown(call.name, call.result).items()
                ],
            }
        )
        status_counts[call.status] = status_counts.get(call.status, 0) + 1
        name_counts[call.name] = name_counts.get(call.name, 0) + 1
    origin = turn.started or turn.created
    entries = []
    for step in steps:
        usage = step.usage if isinstance(step.usage, dict) else {}
        entries.append(
            {
                "step": step,
                "offset": format_duration(duration_ms(origin, step.started))
                if origin and step.started
                else "—",
                "duration": format_duration(duration_ms(step.started, step.finished)),
                "usage": ", ".join(f"{k}: {v}" for k, v in usage.items() if not isinstance(v, dict | list)),
                "usage_json": json.dumps(usage, indent=2, ensure_ascii=False) if usage else "",
                "tool_calls": calls_by_step.get(step.id, []),
            }
        )
    return {
        "entries": entries,
        "step_count": len(steps),
        "tool_call_count": sum(status_counts.values()),
        "tool_status_counts": sorted(status_counts.items()),
        "tool_name_counts": sorted(name_counts.items(), key=lambda kv: (-kv[1], kv[0])),
    }


# --- the corpus ----------------------------------------------------------------------------------


def documents_with_length(queryset):
    return queryset.annotate(chars=Length("text"))


def documents_matching(queryset, term: str):
    """The same indexed full-text match the offline search tool uses."""
    return queryset.filter(search_vector=SearchQuery(term, config="english", search_type="websearch"))


def corpus_totals() -> dict:
    return Document.objects.aggregate(documents=Count("id"), characters=Coalesce(Sum(Length("text")), 0))


def corpus_by_source(limit: int = 20) -> list[dict]:
    return list(
        Document.objects.values("source")
        .annotate(documents=Count("id"))
        .order_by("-documents", "source")[:limit]
    )


# --- the dashboard's statistics ------------------------------------------------------------------


class PercentileCont(Aggregate):
    """Postgres `percentile_cont(p) WITHIN GROUP (ORDER BY expr)`: a continuous percentile, NULLs ignored."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    allow_distinct = False

    def __init__(self, expression, percentile: float, **extra):
        percentile = float(percentile)
        if not 0.0 <= percentile <= 1.0:
            raise ValueError(f"percentile must be within [0, 1], got {percentile}")
        # The percentile is our own constant (checked above), never user input: safe to inline.
        super().__init__(expression, percentile=repr(percentile), **extra)


def format_duration(value: dt.timedelta | int | None) -> str:
    """A duration for people: '850 ms', '12.3 s', '4.2 min'; accepts a timedelta or milliseconds."""
    if value is None:
        return "—"
    ms = value.total_seconds() * 1000 if isinstance(value, dt.timedelta) else value
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _duration(start: str = "started", end: str = "finished") -> ExpressionWrapper:
    # NULL when either end is missing, which percentile_cont then ignores.
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


@dataclass
class DayRow:
    day: dt.date
    turns: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    p50: dt.timedelta | None = None
    p95: dt.timedelta | None = None

    @property
    def other(self) -> int:
        """Turns still queued or running."""
        return self.turns - self.done - self.failed - self.cancelled


@dataclass
class ToolRow:
    name: str
    calls: int
    errors: int
    p50: dt.timedelta | None
    p95: dt.timedelta | None

    @property
    def p50_text(self) -> str:
        return format_duration(self.p50)

    @property
    def p95_text(self) -> str:
        return format_duration(self.p95)


@dataclass
class Dashboard:
    days: int
    since: dt.datetime
    per_day: list[DayRow]
    tools: list[ToolRow]
    totals: dict
    recent_failures: list[Turn] = field(default_factory=list)


def build_dashboard(days: int = 30, now: dt.datetime | None = None) -> Dashboard:
    """Aggregate the last `days` days (today included) of turns and tool calls: four queries."""
    now = now or timezone.now()
    today = timezone.localtime(now).date()
    first_day = today - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first_day, dt.time.min))

    turns = Turn.objects.filter(created__gte=since)
    status_counts = {
        "done": Count("id", filter=Q(status=Turn.Status.DONE)),
        "failed": Count("id", filter=Q(status=Turn.Status.FAILED)),
        "cancelled": Count("id", filter=Q(status=Turn.Status.CANCELLED)),
    }
    by_day = {
        timezone.localtime(row["day"]).date() if isinstance(row["day"], dt.datetime) else row["day"]: row
        for row in turns.annotate(day=TruncDay("created"))
        .values("day")
        .annotate(
            turns=Count("id"),
            **status_counts,
            p50=PercentileCont(_duration(), 0.5),
            p95=PercentileCont(_duration(), 0.95),
        )
        .order_by("day")
    }
    per_day = []
    for offset in range(days):
        day = first_day + dt.timedelta(days=offset)
        row = by_day.get(day)
        per_day.append(
            DayRow(day=day, **{k: row[k] for k in ("turns", "done", "failed", "cancelled", "p50", "p95")})
            if row
            else DayRow(day=day)
        )

    totals = turns.aggregate(
        turns=Count("id"),
        **status_counts,
        running=Count("id", filter=Q(status=Turn.Status.RUNNING)),
        queued=Count("id", filter=Q(status=Turn.Status.QUEUED)),
        p50=PercentileCont(_duration(), 0.5),
        p95=PercentileCont(_duration(), 0.95),
        tokens_in=Sum("tokens_in"),
        tokens_out=Sum("tokens_out"),
        steps=Sum("steps"),
    )
    tools = [
        ToolRow(**row)
        for row in ToolCall.objects.filter(started__gte=since)
        .values("name")
        .annotate(
            calls=Count("id"),
            errors=Count("id", filter=Q(status=ToolCall.Status.ERROR)),
            p50=PercentileCont(_duration(), 0.5),
            p95=PercentileCont(_duration(), 0.95),
        )
        .order_by("-calls", "name")
    ]
    totals["tool_calls"] = sum(t.calls for t in tools)
    totals["tool_errors"] = sum(t.errors for t in tools)
    finished = totals["done"] + totals["failed"] + totals["cancelled"]
    totals["failure_rate"] = totals["failed"] / finished if finished else None
    totals["p50_text"] = format_duration(totals["p50"])
    totals["p95_text"] = format_duration(totals["p95"])
    recent_failures = list(
        turns.filter(status=Turn.Status.FAILED)
        .select_related("conversation__owner")
        .order_by("-created")[:10]
    )
    return Dashboard(
        days=days, since=since, per_day=per_day, tools=tools, totals=totals, recent_failures=recent_failures
    )


# --- uploaded files ------------------------------------------------------------------------------


def files_by_owner(limit: int = 50) -> list[dict]:
    """Per user: how many files they uploaded, their bytes, and how many are ready or failed."""
    return list(
        Attachment.objects.filter(origin=Attachment.Origin.UPLOAD)
        .values("owner__username")
        .annotate(
            files=Count("id"),
            bytes=Coalesce(Sum("size"), 0),
            ready=Count("id", filter=Q(text__status="ready")),
            failed=Count("id", filter=Q(text__status="failed")),
        )
        .order_by("-bytes", "owner__username")[:limit]
    )
