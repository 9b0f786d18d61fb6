"""`continue_final_message`: the server goes on writing an unfinished assistant message (the agent's
resume of a step its worker died in), with vLLM's semantics, against a live server process whose
scripted Kimi-format model continues greedily (see inference_servers.write_scripted_kimi_model)."""

import httpx
import pytest

from inference.server.chat_templates import KIMI_K2_TEMPLATE, render_continuation

USER = [{"role": "user", "content": "What is Kimi K2?"}]
TOOLS = [{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}]
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


def collect(stream):
    reasoning, content, calls, finish = "", "", [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    return reasoning, content, calls, finish


def test_unfinished_reasoning_is_continued_inside_the_think_block_and_the_call_follows(client):
    partial = {"role": "assistant", "content": "", "reasoning_content": "The user wants facts."}
    stream = client.chat.completions.create(
        model="default",
        messages=[*USER, partial],
        tools=TOOLS,
        stream=True,
        temperature=0,
        extra_body={**CONTINUE, "chat_template_kwargs": {"thinking": True}},
    )
    reasoning, content, calls, finish = collect(stream)
    assert (reasoning, content) == (" I will search.", "")  # only the new text, still reasoning
    assert calls[0].function.name == "web_search" and finish == "tool_calls"


def test_an_unfinished_answer_is_continued_as_answer_text(client):
    partial = {"role": "assistant", "content": "Hello"}
    stream = client.chat.completions.create(
        model="default",
        messages=[*USER, partial],
        stream=True,
        temperature=0,
        extra_body={**CONTINUE, "chat_template_kwargs": {"thinking": False}},
    )
    assert collect(stream) == ("", " from the scripted model.", [], "stop")


def test_the_continued_prompt_is_the_message_rendered_open():
    partial = {"role": "assistant", "content": "", "reasoning_content": "The user wants facts."}
    prompt = render_continuation(KIMI_K2_TEMPLATE, [*USER, partial], thinking=True)
    assert prompt.endswith("<|im_assistant|>assistant<|im_middle|><think>The user wants facts.")
    answer = {"role": "assistant", "content": "Hel", "reasoning_content": "Think."}
    assert render_continuation(KIMI_K2_TEMPLATE, [*USER, answer]).endswith("<think>Think.</think>Hel")


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"continue_final_message": True}, "add_generation_prompt"),
        ({"add_generation_prompt": False}, "add_generation_prompt"),
        (CONTINUE | {"messages": USER}, "messages"),
    ],
    ids=["with-generation-prompt", "no-prompt-without-continue", "last-message-not-assistant"],
)
def test_a_continuation_the_server_cannot_do_is_a_400_naming_the_parameter(base_url, extra, param):
    body = {"model": "default", "messages": [*USER, {"role": "assistant", "content": "Hel"}], **extra}
    reply = httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
