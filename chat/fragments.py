"""Turns a turn's events into HTML: live htmx out-of-band fragments, or the whole turn at once.

`TurnProjection` folds typed events (agent/events.py) into a small model of the turn — thinking
segments and tool cards in the order they happened, the answer, the status — and records the DOM
operations each event implies. Tool cards are keyed by (step index, call id): Kimi-format ids
(`functions.python:0`) are unique only within one model response. Thinking text is only ever appended (never re-rendered); the answer
is markdown, so it is re-rendered at most once per frame. The same projection renders a finished
turn from Postgres rows (`project_from_db`), so live and reloaded turns look identical.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from django.template.loader import render_to_string
from django.utils import timezone

from agent import events as ev
from agent.corpus import SearchResults

from .attachments import stored_file
from .rendering import render_markdown, render_plain

INTERRUPTED_LABEL = "(interrupted — retried)"

# More tool calls than this in a turn: the panel summary names counts per tool.
MANY_TOOL_CALLS = 6


class StreamingMarkdown:
    """Renders an answer that grows at its end: finished blocks once, only the open block each frame.

    A block is finished at a blank line outside a code fence or a `$$` math block; blocks rendered
    apart give the same HTML as the whole (markdown-it keeps an ordered list's start number), so a
    frame costs the size of the last paragraph, not of the whole answer.
    """

    def __init__(self):
        self.stable_len = 0
        self.stable_html: list[str] = []

    def render(self, text: str, cite=None) -> str:
        if not text.startswith(text[: self.stable_len]) or len(text) < self.stable_len:
            self.__init__()
        split = self._last_block_end(text)
        if split > self.stable_len:
            self.stable_html.append(render_markdown(text[self.stable_len : split], cite))
            self.stable_len = split
        return "".join(self.stable_html) + render_markdown(text[self.stable_len :], cite)

    def _last_block_end(self, text: str) -> int:
        """The end of the last blank line after stable_len that is outside fences and not inside a
        list or quote (a list with blank lines between items is one list); 0 if none."""
        lines = text[self.stable_len :].splitlines(keepends=True)
        pos, last, fence, math = self.stable_len, 0, False, False
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith(("```", "~~~")):
                fence = not fence
            elif not fence and (stripped == "$$" or stripped.startswith("$$") != stripped.endswith("$$")):
                math = not math
            pos += len(line)
            if stripped or fence or math or i + 1 >= len(lines):
                continue
            following = lines[i + 1]
            if (
                following.strip()
                and not _CONTINUES_BLOCK.match(following)
                and not _CONTINUES_BLOCK.match(_previous_block_start(lines, i))
            ):
                last = pos
        return last


_CONTINUES_BLOCK = re.compile(r"^(\s|[-*+]\s|\d+[.)]\s|>)")


def _previous_block_start(lines: list[str], blank: int) -> str:
    """The first line of the block that ends at the blank line `blank`."""
    i = blank - 1
    while i > 0 and lines[i - 1].strip():
        i -= 1
    return lines[i] if i >= 0 else ""


@dataclass
class Segment:
    """A run of thinking text between tool calls."""

    n: int
    parts: list[str] = field(default_factory=list)
    kind: str = "think"

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class ToolCard:
    k: int  # its position in the trace: the DOM ids `tool-<turn>-<k>`, `args-<turn>-<k>`
    step: int
    call_id: str
    name: str = ""
    arguments: str = ""
    status: str = "preparing"  # preparing | running | done | error | cancelled
    result: str = ""
    error: str = ""
    duration_ms: int = 0
    files: list[dict] = field(default_factory=list)  # what the call made: id, name, size, content_type, url


def _parse_json(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def search_sources(result: str) -> list[dict]:
    """The links of a `web_search` result (`SearchResults` JSON, as the tool returns it); [] for an error text."""
    results = SearchResults.from_json(result)
    if results is None:
        return []
    return [
        {
            "url": hit.url,
            "title": (hit.title or hit.url)[:300],
            "snippet": hit.snippet[:400],
            "host": urlsplit(hit.url).hostname or "",
        }
        for hit in results.hits
        if urlsplit(hit.url).scheme in ("http", "https")
    ]


def card_context(card: ToolCard, turn_uuid: str) -> dict:
    """What tool_card.html needs: arguments decoded, and a view of the result fitted to the tool."""
    args = _parse_json(card.arguments)
    args = args if isinstance(args, dict) else {}
    view = {"kind": "text"}
    name = card.name
    if name == "python" and "code" in args:
        view = {"kind": "python", "code_html": render_markdown(f"```python\n{args['code']}\n```")}
    elif name == "web_search":
        view = {"kind": "search", "query": str(args.get("query", "")), "sources": search_sources(card.result)}
    elif name == "browse":
        url = str(args.get("url", ""))
        view = {"kind": "browse", "url": url if urlsplit(url).scheme in ("http", "https") else ""}
    if args:
        label = next(iter(args.values()))
        label = label if isinstance(label, str) else json.dumps(label, ensure_ascii=False)
    else:
        label = card.arguments
    return {
        "card": card,
        "turn_uuid": turn_uuid,
        "view": view,
        "label": label[:160],
        "args_pretty": json.dumps(args, ensure_ascii=False, indent=2) if args else card.arguments,
        "duration": f"{card.duration_ms / 1000:.1f} s" if card.duration_ms else "",
        "finished": card.status in ("done", "error", "cancelled"),
    }


class TurnProjection:
    """The browser's view of one turn, and the fragments that bring a browser from one state to the next."""

    def __init__(self, turn_uuid: str, started: datetime | None = None, status: str = "queued"):
        self.uuid = str(turn_uuid)
        self.started = started
        self.status = status
        self.seq = 0
        self.items: list[Segment | ToolCard] = []
        self.cards: dict[tuple[int, str], ToolCard] = {}  # by (step index, call id)
        self.step = 0  # the index of the step events now belong to
        self.current: Segment | None = None
        self.content_parts: list[str] = []
        self.answer_renderer = StreamingMarkdown()
        self.step_content_from = 0  # where the current step's content starts in content_parts
        self.error = ""
        self.thought_s: int | None = None
        self.sources: dict[str, dict] = {}
        # Pending DOM operations: [kind, target, parts] with kind append | replace | inner; parts is a
        # list of strings so long replays stay linear.
        self.ops: list[list] = []
        self._open_segment_op: list | None = None  # the op that creates self.current, while last
        self.answer_dirty = False
        self.t_created = time.monotonic()
        self.extra_context: dict = {}  # e.g. csrf_token for forms rendered outside a request
        self.notice = ""  # what the running turn waits on (TurnStatus), shown in its status line
        self.cite = None  # links citations of the conversation's files (chat.rendering.CiteResolver)

    # -- folding events -------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def tool_count(self) -> int:
        return len(self.cards)

    @property
    def running(self) -> bool:
        return self.status in ("queued", "running")

    def apply(self, event: ev.Event, seq: int = 0) -> None:
        """Fold one event (published as `seq`; 0 for events rebuilt from Postgres) into the view."""
        self.seq = max(self.seq, seq)
        match event:
            case ev.TurnStarted():
                self.status = "running"
                self.notice = ""  # a queued turn's place in the queue
                self._replace_status()
            case ev.ReasoningDelta(text=text):
                self._append_thinking(text)
            case ev.ContentDelta(text=text):
                self._append_content(text)
            case ev.StepStarted(index=index):
                self.step = index
                self.current = None
                self.step_content_from = len(self.content_parts)
            case ev.StepFinished(finish_reason="tool_calls"):
                self._move_step_content_to_trace()
            case ev.StepFinished(finish_reason="interrupted"):
                # A cut-off step the model server could not continue: kept, labelled, and retried.
                self._move_step_content_to_trace()
                self.current = None
                self._append_thinking(INTERRUPTED_LABEL, kind="note")
                self.current = None
            case ev.ToolCallStarted(call_id=call_id, name=name):
                self._tool_started(call_id, name, again=True)
            case ev.ToolCallArguments(call_id=call_id, delta=delta):
                card = self.cards.get((self.step, call_id))
                if card is not None:
                    card.arguments += delta
                    self._op("append", f"args-{self.uuid}-{card.k}", render_plain(delta))
            case ev.ToolCallRunning() | ev.ToolCallFinished():
                self._tool_update(event)
            case ev.TurnStatus(text=text):
                self.notice = text
                self._replace_status()
            case ev.TurnFinished():
                self._finished(event)

    def _op(self, kind: str, target: str, fragment: str) -> None:
        last = self.ops[-1] if self.ops else None
        if last and last[1] == target and last[0] == kind == "append":
            last[2].append(fragment)
        elif last and last[1] == target and last[0] == kind == "replace":
            last[2] = [fragment]
        else:
            self.ops.append([kind, target, [fragment]])

    def _append_thinking(self, text: str, kind: str = "think") -> None:
        if not text:
            return
        if self.current is None or self.current.kind != kind:
            self.current = Segment(n=len(self.items) + 1, kind=kind)
            self.items.append(self.current)
            self.current.parts.append(text)
            self._replace_summary()
            # Open the segment last, so the text that follows joins it inside the same operation.
            self._op("append", f"trace-{self.uuid}", self._segment_open(self.current))
            self._op("append", f"trace-{self.uuid}", render_plain(text))
            self._op("append", f"trace-{self.uuid}", "</div>")
            self._open_segment_op = self.ops[-1]
        else:
            self.current.parts.append(text)
            if self.ops and self.ops[-1] is self._open_segment_op:
                self._open_segment_op[2].insert(-1, render_plain(text))  # before its "</div>"
            else:
                self._op("append", f"seg-{self.uuid}-{self.current.n}", render_plain(text))

    def _append_content(self, text: str) -> None:
        if not text:
            return
        first = not self.content_parts
        self.content_parts.append(text)
        self.current = None
        self.answer_dirty = True
        if first and self.thought_s is None:
            self.thought_s = self._elapsed()
            self._replace_summary(collapse=True)

    def _move_step_content_to_trace(self) -> None:
        """Text the model wrote before calling tools is part of the trace, not the answer."""
        said = "".join(self.content_parts[self.step_content_from :])
        if said.strip():
            del self.content_parts[self.step_content_from :]
            self.answer_dirty = True
            self.current = None
            self._append_thinking(said, kind="say")
            self.current = None
            if not self.content_parts:
                self.thought_s = None
                self._replace_summary()

    def _tool_started(self, call_id: str, name: str, again: bool = False) -> ToolCard:
        card = self.cards.get((self.step, call_id))
        if card is not None:
            if again and card.status == "preparing" and card.arguments:
                # The call's step was cut off while it streamed and is being continued: it streams anew.
                card.arguments = ""
                self._op("replace", f"tool-{self.uuid}-{card.k}", self._card_html(card))
            return card
        card = ToolCard(k=len(self.items) + 1, step=self.step, call_id=call_id, name=name)
        self.cards[(self.step, call_id)] = card
        self.items.append(card)
        self.current = None
        self._op("append", f"trace-{self.uuid}", self._card_html(card))
        self._replace_summary()
        return card

    def _tool_update(self, event: ev.ToolCallRunning | ev.ToolCallFinished) -> None:
        card = self._tool_started(event.call_id, event.name)
        card.name = event.name or card.name
        card.arguments = event.arguments or card.arguments
        if isinstance(event, ev.ToolCallRunning):
            card.status = "running"
        else:
            card.status = event.status
            card.result = event.result
            card.error = event.error
            card.duration_ms = event.duration_ms
            card.files = event.files
            for source in card_context(card, self.uuid)["view"].get("sources", []):
                self.sources.setdefault(source["url"], source)
            if card.name == "browse":
                url = str((_parse_json(card.arguments) or {}).get("url", ""))
                if urlsplit(url).scheme in ("http", "https"):
                    self.sources.setdefault(url, {"url": url, "title": url, "host": urlsplit(url).hostname})
        self._op("replace", f"tool-{self.uuid}-{card.k}", self._card_html(card))
        self._replace_summary()

    def _finished(self, event: ev.TurnFinished) -> None:
        self.status = event.status
        self.error = event.error
        if event.content and event.content != self.content:
            self.content_parts = [event.content]
            self.answer_dirty = True
        if self.thought_s is None:
            self.thought_s = self._elapsed()
        self.current = None
        self._replace_summary(collapse=bool(self.content_parts))
        self._op("replace", f"sources-{self.uuid}", self._render("chat/partials/sources.html"))
        self._op("replace", f"err-{self.uuid}", self._render("chat/partials/turn_error.html"))
        self._replace_status()

    def _elapsed(self) -> int:
        if self.started is not None:
            return max(0, int((timezone.now() - self.started).total_seconds()))
        return int(time.monotonic() - self.t_created)

    # -- HTML -----------------------------------------------------------------------------------

    def _context(self, **extra) -> dict:
        return {"p": self, "turn_uuid": self.uuid, **self.extra_context, **extra}

    def _render(self, template: str, **extra) -> str:
        return render_to_string(template, self._context(**extra))

    def _segment_open(self, seg: Segment) -> str:
        return f'<div class="seg seg-{seg.kind}" id="seg-{self.uuid}-{seg.n}">'

    def _card_html(self, card: ToolCard) -> str:
        return render_to_string("chat/partials/tool_card.html", card_context(card, self.uuid))

    def _replace_summary(self, collapse: bool = False) -> None:
        self._op("replace", f"sum-{self.uuid}", self._render("chat/partials/summary.html", collapse=collapse))

    def _replace_status(self) -> None:
        self._op("replace", f"status-{self.uuid}", self._render("chat/partials/turn_status.html"))

    def summary_label(self) -> str:
        if self.thought_s is None and self.running:
            label = "Thinking…" if any(isinstance(i, Segment) for i in self.items) else "Working…"
        elif self.thought_s is not None:
            label = f"Thought for {self.thought_s} s" if self.thought_s >= 1 else "Thought for <1 s"
        else:
            label = "Thought"
        if self.cards:
            label += f" · {self.tool_count} tool call{'s' if self.tool_count != 1 else ''}"
            if self.tool_count > MANY_TOOL_CALLS:
                counts: dict[str, int] = {}
                for card in self.cards.values():
                    counts[card.name] = counts.get(card.name, 0) + 1
                label += " (" + ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) + ")"
        return label

    def answer_html(self) -> str:
        if self.running:
            return self.answer_renderer.render(self.content, self.cite)
        return render_markdown(self.content, self.cite)

    def segment_items(self):
        """Items tagged for the template: ('seg', Segment, html) or ('card', card context)."""
        for item in self.items:
            if isinstance(item, Segment):
                yield {"seg": item, "text_html": render_plain(item.text)}
            else:
                yield {"card_html": self._card_html(item)}

    def take_frame(self) -> str:
        """The pending operations as one WebSocket message of htmx OOB swaps ('' when none)."""
        if self.answer_dirty:
            self.answer_dirty = False
            self._op("inner", f"answer-{self.uuid}", self.answer_html())
        if not self.ops:
            return ""
        out = []
        for kind, target, parts in self.ops:
            fragment = "".join(parts)
            if kind == "append":
                out.append(f'<div hx-swap-oob="beforeend:#{target}">{fragment}</div>')
            elif kind == "inner":
                out.append(f'<div id="{target}" hx-swap-oob="innerHTML">{fragment}</div>')
            else:
                out.append(fragment)
        self.ops = []
        self._open_segment_op = None
        out.append(f'<span class="seq" id="seq-{self.uuid}" data-seq="{self.seq}" hidden></span>')
        return "".join(out)

    def discard_frame(self) -> None:
        self.ops = []
        self._open_segment_op = None
        self.answer_dirty = False

    def render_full(self, **extra) -> str:
        self.discard_frame()
        return self._render("chat/partials/turn.html", **extra)


def events_from_db(turn) -> list[ev.Event]:
    """Rebuild a turn's events from its Postgres rows (the stream expired or Redis lost it)."""
    events: list[ev.Event] = [ev.TurnStarted(thinking=turn.thinking, model=turn.model)]
    steps = list(turn.step_rows.prefetch_related("tool_calls__attachments"))
    answer = getattr(turn, "answer", None) if hasattr(turn, "answer") else None
    for i, step in enumerate(steps):
        calls = list(step.tool_calls.all())
        events.append(ev.StepStarted(index=step.index))
        if step.reasoning:
            events.append(ev.ReasoningDelta(text=step.reasoning))
        is_last = i == len(steps) - 1
        if step.content and (
            (not is_last and calls) or answer is None or step.finish_reason == "interrupted"
        ):
            events.append(ev.ContentDelta(text=step.content))
        for call in calls:
            duration = 0
            if call.finished and call.started:
                duration = max(0, int((call.finished - call.started).total_seconds() * 1000))
            events.append(ev.ToolCallStarted(call_id=call.call_id, index=call.index, name=call.name))
            if call.status == "running":
                events.append(
                    ev.ToolCallRunning(call_id=call.call_id, name=call.name, arguments=call.arguments)
                )
            else:
                events.append(
                    ev.ToolCallFinished(
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                        result=call.result,
                        status=call.status,
                        error=call.error,
                        duration_ms=duration,
                        files=[asdict(stored_file(a)) for a in call.attachments.all()],
                    )
                )
        events.append(ev.StepFinished(index=step.index, finish_reason=step.finish_reason or ""))
    if answer is not None and answer.content:
        events.append(ev.ContentDelta(text=answer.content))
    if turn.is_finished:
        events.append(
            ev.TurnFinished(
                status=turn.status, error=turn.error, content=answer.content if answer is not None else ""
            )
        )
    return events


def thought_seconds_from_db(turn) -> int | None:
    """How long the model worked before answering, from checkpoint times (best effort)."""
    if not turn.started:
        return None
    end = turn.finished
    last = turn.step_rows.order_by("-index").first()
    if last is not None and turn.steps > 1 and last.started:
        end = last.started
    if end is None:
        return None
    return max(0, int((end - turn.started).total_seconds()))


def project_from_db(turn) -> TurnProjection:
    """The projection of a turn built from Postgres alone."""
    projection = TurnProjection(str(turn.uuid), started=turn.started, status=turn.status)
    for event in events_from_db(turn):
        projection.apply(event)
    if turn.is_finished:
        projection.thought_s = thought_seconds_from_db(turn) if projection.items else projection.thought_s
    projection.status = turn.status
    projection.discard_frame()
    return projection
