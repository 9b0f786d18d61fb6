"""Kimi K2 output format: `<think>…</think>` reasoning (which may end implicitly where the tool
section begins), then an optional tool-call section:

    <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}
    <|tool_call_end|>…<|tool_calls_section_end|>
"""

from __future__ import annotations

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

# Some Kimi K2 releases spell the section markers in the singular; accept both.
SECTION_BEGINS = (TOOL_CALLS_SECTION_BEGIN, "<|tool_call_section_begin|>")
SECTION_ENDS = (TOOL_CALLS_SECTION_END, "<|tool_call_section_end|>")


def _held_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that could still grow into one of `markers`."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


def _find_first(text: str, markers: tuple[str, ...]) -> tuple[int, str] | None:
    found = [(text.find(m), m) for m in markers if m in text]
    return min(found) if found else None


class KimiK2ReasoningDetector:
    """Splits text into (reasoning, content). Starts inside the think block when the prompt opened it."""

    def __init__(self, in_reasoning: bool = False):
        self.in_reasoning = in_reasoning
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        self.buffer += text
        reasoning, content = [], []
        while self.buffer:
            if self.in_reasoning:
                hit = _find_first(self.buffer, (THINK_END, *SECTION_BEGINS))
                if hit is None:
                    keep = _held_suffix(self.buffer, (THINK_END, *SECTION_BEGINS))
                    reasoning.append(self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                    break
                pos, marker = hit
                reasoning.append(self.buffer[:pos])
                self.in_reasoning = False
                # The tool section also ends the thinking, but it is content for the tool parser.
                self.buffer = self.buffer[pos + len(marker) :] if marker == THINK_END else self.buffer[pos:]
            else:
                pos = self.buffer.find(THINK_START)
                if pos < 0:
                    keep = _held_suffix(self.buffer, (THINK_START,))
                    content.append(self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                    break
                content.append(self.buffer[:pos])
                self.in_reasoning = True
                self.buffer = self.buffer[pos + len(THINK_START) :]
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of generation."""
        rest, self.buffer = self.buffer, ""
        return (rest, "") if self.in_reasoning else ("", rest)


@dataclass
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass
class ToolCallArguments:
    index: int
    fragment: str


_CALL_ID = re.compile(r"^(?:functions\.)?(?P<name>[^:]+?)(?::(?P<idx>\d+))?$")


class KimiK2ToolCallDetector:
    """Turns content text into a stream of events: str (content), ToolCallStart, ToolCallArguments.

    Malformed calls are never dropped: whatever the model wrote as arguments is passed through as
    the raw argument string, and the client decides what to do with invalid JSON."""

    TEXT, SECTION, CALL_ID, ARGS, AFTER = range(5)

    def __init__(self):
        self.state = self.TEXT
        self.buffer = ""
        self.calls: list[dict] = []  # {"id", "name", "arguments"} in order

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str) -> list:
        self.buffer += text
        events: list = []
        while self.buffer:
            if self.state in (self.TEXT, self.AFTER):
                hit = _find_first(self.buffer, SECTION_BEGINS)
                if hit is None:
                    keep = _held_suffix(self.buffer, SECTION_BEGINS)
                    self._content(events, self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                    break
                pos, marker = hit
                self._content(events, self.buffer[:pos])
                self.buffer = self.buffer[pos + len(marker) :]
                self.state = self.SECTION
            elif self.state == self.SECTION:
                hit = _find_first(self.buffer, (TOOL_CALL_BEGIN, *SECTION_ENDS))
                if hit is None:
                    keep = _held_suffix(self.buffer, (TOOL_CALL_BEGIN, *SECTION_ENDS))
                    self.buffer = self.buffer[len(self.buffer) - keep :]  # whitespace between calls
                    break
                pos, marker = hit
                self.buffer = self.buffer[pos + len(marker) :]
                self.state = self.CALL_ID if marker == TOOL_CALL_BEGIN else self.AFTER
            elif self.state == self.CALL_ID:
                pos = self.buffer.find(TOOL_CALL_ARGUMENT_BEGIN)
                if pos < 0:
                    break  # the id is short; wait for all of it
                self._start_call(events, self.buffer[:pos].strip())
                self.buffer = self.buffer[pos + len(TOOL_CALL_ARGUMENT_BEGIN) :]
                self.state = self.ARGS
            elif self.state == self.ARGS:
                hit = _find_first(self.buffer, (TOOL_CALL_END, *SECTION_ENDS))
                if hit is None:
                    keep = _held_suffix(self.buffer, (TOOL_CALL_END, *SECTION_ENDS))
                    self._arguments(events, self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                    break
                pos, marker = hit
                self._arguments(events, self.buffer[:pos])
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
        elif self.state == self.ARGS:
            self._arguments(events, rest)
        return events

    def _content(self, events, text):
        if text:
            events.append(text)

    def _start_call(self, events, raw_id: str):
        index = len(self.calls)
        m = _CALL_ID.match(raw_id)
        name = m["name"] if m else raw_id
        call_id = (
            raw_id
            if raw_id.startswith("functions.") and m and m["idx"] is not None
            else f"functions.{name}:{index}"
        )
        self.calls.append({"id": call_id, "name": name, "arguments": ""})
        events.append(ToolCallStart(index, call_id, name))

    def _arguments(self, events, text):
        if text and self.calls:
            self.calls[-1]["arguments"] += text
            events.append(ToolCallArguments(len(self.calls) - 1, text))
