"""Model-output parsers: split generated text into reasoning, content and tool calls, incrementally.

One detector per format (`kimi_k2`): `KimiK2ReasoningDetector` and `KimiK2ToolCallDetector`.
Both are streaming-safe: text that might be the start of a special token is held back until the
next chunk decides, so a marker split across chunks never leaks into the output."""

from inference.server.parsers.kimi_k2 import (
    KimiK2ReasoningDetector,
    KimiK2ToolCallDetector,
    ToolCallArguments,
    ToolCallStart,
)

__all__ = ["KimiK2ReasoningDetector", "KimiK2ToolCallDetector", "ToolCallArguments", "ToolCallStart"]
