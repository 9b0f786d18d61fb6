"""Kimi K2 output format: `<think>…</think>` reasoning (which may end implicitly where the tool
section begins), then an optional tool-call section:

    <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}
    <|tool_call_end|>…<|tool_calls_section_end|>

Marker text is never passed on as reasoning or content: a marker out of place (a section end with no
section, a `<think>` inside the answer) is dropped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from inference.server.chat_templates import (
    THINK_END,
    THINK_START,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
)
from inference.server.parsers.holdback import find_first, split_safe

log = logging.getLogger(__name__)

# Some Kimi K2 releases spell the section markers in the singular; accept both.
SECTION_BEGINS = (TOOL_CALLS_SECTION_BEGIN, "<|tool_call_section_begin|>")
SECTION_ENDS = (TOOL_CALLS_SECTION_END, "<|tool_call_section_end|>")
# Markers that mean nothing where they stand outside a tool section: dropped from the text.
STRAY_TOOL_MARKERS = (*SECTION_ENDS, TOOL_CALL_BEGIN, TOOL_CALL_ARGUMENT_BEGIN, TOOL_CALL_END)


class KimiK2ReasoningDetector:
    """Splits text into (reasoning, content). Starts inside the think block when the prompt opened it,
    in the answer when the prompt continues one (`in_content`); otherwise only a `<think>` at the very
    start of the output opens one."""

    START, REASONING, CONTENT = range(3)

    def __init__(self, in_reasoning: bool = False, in_content: bool = False):
        self.state = self.REASONING if in_reasoning else self.CONTENT if in_content else self.START
        self.buffer = ""

    @property
    def in_reasoning(self) -> bool:
        return self.state == self.REASONING

    def feed(self, text: str) -> tuple[str, str]:
        self.buffer += text
        reasoning, content = [], []
        while self.buffer:
            if self.state == self.START:
                stripped = self.buffer.lstrip()
                if stripped.startswith(THINK_START):
                    self.buffer = stripped[len(THINK_START) :]
                    self.state = self.REASONING
                elif THINK_START.startswith(stripped):
                    break  # might still become the opening <think>
                else:
                    self.state = self.CONTENT
            elif self.state == self.REASONING:
                markers = (THINK_END, *SECTION_BEGINS, THINK_START, *STRAY_TOOL_MARKERS)
                hit = find_first(self.buffer, markers)
                if hit is None:
                    out, self.buffer = split_safe(self.buffer, markers)
                    reasoning.append(out)
                    break
                pos, marker = hit
                reasoning.append(self.buffer[:pos])
                if marker in SECTION_BEGINS:
                    # The tool section also ends the thinking, but it is content for the tool parser.
                    self.buffer = self.buffer[pos:]
                    self.state = self.CONTENT
                else:
                    self.buffer = self.buffer[pos + len(marker) :]
                    if marker == THINK_END:
                        self.state = self.CONTENT
            else:
                hit = find_first(self.buffer, (THINK_START, THINK_END))
                if hit is None:
                    out, self.buffer = split_safe(self.buffer, (THINK_START, THINK_END))
                    content.append(out)
                    break
                pos, marker = hit
                content.append(self.buffer[:pos])
                self.buffer = self.buffer[pos + len(marker) :]
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of generation."""
        rest, self.buffer = self.buffer, ""
        return (rest, "") if self.state == self.REASONING else ("", rest)


@dataclass
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass
class ToolCallArguments:
    index: int
    fragment: str


_CALL_ID = re.compile(r"^functions\.(?P<name>[^:\s]+):(?P<idx>\d+)$")
_LOOSE_ID = re.compile(r"^(?:functions\.)?(?P<name>[^:\s]+?)(?::\d+)?$")


def _fits(arguments: str, schema: dict | None) -> bool:
    """Whether `arguments` is a JSON object with every required key of `schema` and no key it lacks."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return False
    if not isinstance(args, dict):
        return False
    schema = schema or {}
    properties = schema.get("properties")
    required = schema.get("required") or []
    if any(key not in args for key in required):
        return False
    return properties is None or all(key in properties for key in args)


class KimiK2ToolCallDetector:
    """Turns content text into a stream of events: str (content), ToolCallStart, ToolCallArguments.

    Calls are never dropped: whatever the model wrote as arguments is passed through as the raw
    argument string, and the client decides what to do with invalid JSON. Ids are unique within one
    output. A call whose id is not `functions.NAME:IDX` takes its name from `tools` (the request's
    function definitions): the tool of that name, else the one tool whose schema the arguments fit;
    when none or several fit, the call's name is empty, which a client reports as an unknown tool."""

    TEXT, SECTION, CALL_ID, ARGS, AFTER = range(5)

    def __init__(self, tools: list[dict] | None = None):
        functions = [t.get("function", t) for t in tools or []]
        self.schemas = {f["name"]: f.get("parameters") for f in functions}
        self.state = self.TEXT
        self.buffer = ""
        self.calls: list[dict] = []  # {"id", "name", "arguments"} in order
        self.deferred: str | None = None  # the raw id of a call whose name waits for its arguments
        self.deferred_args = ""

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str) -> list:
        self.buffer += text
        events: list = []
        while self.buffer:
            if self.state in (self.TEXT, self.AFTER):
                markers = (*SECTION_BEGINS, *STRAY_TOOL_MARKERS)
                hit = find_first(self.buffer, markers)
                if hit is None:
                    out, self.buffer = split_safe(self.buffer, markers)
                    self._content(events, out)
                    break
                pos, marker = hit
                self._content(events, self.buffer[:pos])
                self.buffer = self.buffer[pos + len(marker) :]
                if marker in SECTION_BEGINS:
                    self.state = self.SECTION
            elif self.state == self.SECTION:
                markers = (TOOL_CALL_BEGIN, *SECTION_ENDS)
                hit = find_first(self.buffer, markers)
                if hit is None:
                    self.buffer = split_safe(self.buffer, markers)[1]  # whitespace between calls
                    break
                pos, marker = hit
                self.buffer = self.buffer[pos + len(marker) :]
                self.state = self.CALL_ID if marker == TOOL_CALL_BEGIN else self.AFTER
            elif self.state == self.CALL_ID:
                hit = find_first(
                    self.buffer, (TOOL_CALL_ARGUMENT_BEGIN, TOOL_CALL_BEGIN, TOOL_CALL_END, *SECTION_ENDS)
                )
                if hit is None:
                    break  # the id is short; wait for all of it
                pos, marker = hit
                self._start_call(events, self.buffer[:pos].strip())
                if marker == TOOL_CALL_ARGUMENT_BEGIN:
                    self.buffer = self.buffer[pos + len(marker) :]
                    self.state = self.ARGS
                else:  # a header with no arguments: a call of its own, then whatever follows
                    self._end_call(events)
                    self.buffer = self.buffer[pos:]
                    self.state = self.SECTION
            elif self.state == self.ARGS:
                markers = (TOOL_CALL_END, *SECTION_ENDS, TOOL_CALL_BEGIN)
                hit = find_first(self.buffer, markers)
                if hit is None:
                    out, self.buffer = split_safe(self.buffer, markers)
                    self._arguments(events, out)
                    break
                pos, marker = hit
                self._arguments(events, self.buffer[:pos])
                self._end_call(events)
                if marker == TOOL_CALL_BEGIN:  # the call's end marker is missing
                    self.buffer = self.buffer[pos:]
                    self.state = self.SECTION
                else:
                    self.buffer = self.buffer[pos + len(marker) :]
                    self.state = self.SECTION if marker == TOOL_CALL_END else self.AFTER
        return events

    def finish(self) -> list:
        """Flush at the end of generation: held text, or a call cut short (its raw arguments so far)."""
        events: list = []
        rest, self.buffer = self.buffer, ""
        if self.state in (self.TEXT, self.AFTER):
            self._content(events, rest)
        elif self.state == self.CALL_ID and rest.strip():
            self._start_call(events, rest.strip())
            self._end_call(events)
        elif self.state == self.ARGS:
            self._arguments(events, rest)
            self._end_call(events)
        return events

    def _content(self, events, text):
        if text:
            events.append(text)

    def _start_call(self, events, raw_id: str):
        m = _CALL_ID.match(raw_id)
        if m is not None or not self.schemas:
            loose = m or _LOOSE_ID.match(raw_id)
            self._emit_start(events, raw_id if m else None, loose["name"] if loose else raw_id)
        else:
            loose = _LOOSE_ID.match(raw_id)
            if loose and loose["name"] in self.schemas:
                self._emit_start(events, None, loose["name"])
            else:
                self.deferred, self.deferred_args = raw_id, ""

    def _emit_start(self, events, call_id: str | None, name: str):
        index = len(self.calls)
        used = {c["id"] for c in self.calls}
        if call_id is None or call_id in used:
            n = index
            while (call_id := f"functions.{name or 'unknown'}:{n}") in used:
                n += 1
        self.calls.append({"id": call_id, "name": name, "arguments": ""})
        events.append(ToolCallStart(index, call_id, name))

    def _arguments(self, events, text):
        if not text:
            return
        if self.deferred is not None:
            self.deferred_args += text
        elif self.calls:
            self.calls[-1]["arguments"] += text
            events.append(ToolCallArguments(len(self.calls) - 1, text))

    def _end_call(self, events):
        if self.deferred is None:
            return
        raw_id, args = self.deferred, self.deferred_args
        self.deferred, self.deferred_args = None, ""
        fitting = [name for name, schema in self.schemas.items() if _fits(args, schema)]
        name = fitting[0] if len(fitting) == 1 else ""
        if not name:
            log.info("tool call id %r names no tool and its arguments fit %d tools", raw_id, len(fitting))
        self._emit_start(events, None, name)
        self._arguments(events, args)
