"""Training text in Kimi K2's chat format, rendered by the server's own template (so training, serving and
parsing agree to the byte) and split into segments that say which text the model learns to generate."""

from __future__ import annotations

from inference.server.chat_templates import KIMI_K2_TEMPLATE, render_chat


def render(messages, tools=None, thinking=True, add_generation_prompt=False) -> str:
    return render_chat(
        KIMI_K2_TEMPLATE,
        messages,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        thinking=thinking,
    )


def render_segments(messages: list[dict], tools=None, thinking=True) -> list[tuple[str, bool]]:
    """(text, is_model_output) pieces whose concatenation is the whole rendered conversation: what the model
    writes after each generation prompt is an output piece; everything else (the prompt) is not."""
    segs: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:i], tools, thinking, add_generation_prompt=True)
        full = render(messages[: i + 1], tools, thinking)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("the chat template is not prefix-stable for this conversation")
        segs += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    whole = render(messages, tools, thinking)
    if whole[len(done) :]:
        segs.append((whole[len(done) :], False))
    return segs
