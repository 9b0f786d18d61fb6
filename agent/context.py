"""Context budget for long runs: what of the transcript goes into the next prompt.

When the next prompt would pass the budget, older tool outputs are hidden behind a short placeholder
(the newest few stay in full, Kimi's published strategy); if that is not enough, older reasoning goes,
then the oldest whole steps. The transcript itself is never changed, only the prompt built from it.
"""

from __future__ import annotations

HIDDEN_TOOL_OUTPUT = "[older tool output hidden to save context; call the tool again if you need it]"
CHARS_PER_TOKEN = 3  # deliberately pessimistic: code, URLs and non-English text tokenize densely


def estimate_tokens(message: dict) -> int:
    chars = len(message.get("content") or "") + len(message.get("reasoning_content") or "")
    for call in message.get("tool_calls") or ():
        chars += len(call["function"]["arguments"]) + len(call["function"]["name"]) + 40
    return chars // CHARS_PER_TOKEN + 8  # role and template tokens


def prompt_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(m) for m in messages)


def fit_context(messages: list[dict], budget: int, keep_recent: int = 3) -> list[dict]:
    """The messages to send, under `budget` estimated tokens where at all possible."""
    total = prompt_tokens(messages)
    if total <= budget:
        return messages
    out = list(messages)

    # 1. Hide all but the newest `keep_recent` tool outputs.
    tool_positions = [i for i, m in enumerate(out) if m.get("role") == "tool"]
    for i in tool_positions[: max(0, len(tool_positions) - keep_recent)]:
        if out[i]["content"] != HIDDEN_TOOL_OUTPUT:
            total -= estimate_tokens(out[i])
            out[i] = {**out[i], "content": HIDDEN_TOOL_OUTPUT}
            total += estimate_tokens(out[i])
    if total <= budget:
        return out

    # 2. Drop the reasoning of all but the newest `keep_recent` assistant messages.
    assistant_positions = [i for i, m in enumerate(out) if m.get("role") == "assistant"]
    for i in assistant_positions[: max(0, len(assistant_positions) - keep_recent)]:
        if out[i].get("reasoning_content"):
            total -= estimate_tokens(out[i])
            out[i] = {**out[i], "reasoning_content": ""}
            total += estimate_tokens(out[i])
    if total <= budget:
        return out

    # 3. Drop the oldest whole groups (a user message, or an assistant message with its tool results),
    #    keeping system messages, the newest user message and the newest group.
    groups: list[list[int]] = []
    for i, m in enumerate(out):
        if m.get("role") == "tool" and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=-1)
    dropped: set[int] = set()
    for group in groups[:-1]:
        if total <= budget:
            break
        first = out[group[0]]
        if first.get("role") == "system" or group[0] == last_user:
            continue
        dropped.update(group)
        total -= sum(estimate_tokens(out[i]) for i in group)
    if not dropped:
        return out
    note = {"role": "user", "content": f"[{len(dropped)} earlier messages omitted to save context]"}
    kept: list[dict] = []
    for i, m in enumerate(out):
        if i in dropped:
            if kept and kept[-1] is note:
                continue
            kept.append(note)
        else:
            kept.append(m)
    return kept
