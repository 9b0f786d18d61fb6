"""Streaming-safe marker search, shared by the Kimi K2 parsers and the stop strings: find the first
marker in a buffer, or say how much of its tail to hold back because it might still grow into one."""

from __future__ import annotations


def held_suffix(text: str, markers: tuple[str, ...] | list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into one of `markers`."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


def find_first(text: str, markers: tuple[str, ...] | list[str]) -> tuple[int, str] | None:
    """(position, marker) of the earliest marker in `text`; the longest one where two start together."""
    found = [(text.find(m), -len(m), m) for m in markers if m in text]
    if not found:
        return None
    pos, _, marker = min(found)
    return pos, marker


def split_safe(text: str, markers: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """(text that can go out now, tail held back) for a buffer known to hold none of `markers`."""
    keep = held_suffix(text, markers)
    return text[: len(text) - keep], text[len(text) - keep :]
