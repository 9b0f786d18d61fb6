"""Chat templates: rendering a model's own jinja template the way Hugging Face does, and the Kimi K2
template with its special tokens, for Kimi-format models.

For the model engineer: a Kimi-format checkpoint adds `KIMI_K2_SPECIAL_TOKENS` to its tokenizer as
special tokens and stores `KIMI_K2_TEMPLATE` as `chat_template` in tokenizer_config.json, e.g.

    from inference.server.chat_templates import KIMI_K2_SPECIAL_TOKENS, KIMI_K2_TEMPLATE, render_chat

`render_chat(KIMI_K2_TEMPLATE, messages, tools=..., thinking=True)` gives the exact training text.
Shape of one assistant turn that calls a tool (thinking on):

    <|im_assistant|>assistant<|im_middle|><think>reasoning</think>text<|tool_calls_section_begin|>
    <|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{"q": 1}<|tool_call_end|>
    <|tool_calls_section_end|><|im_end|>          (no newlines in reality)

With thinking off the generation prompt ends in an empty `<think></think>` and the model answers
directly; with thinking on it ends in `<think>` and the model writes its reasoning first. Tool results
come back as `<|im_system|>tool<|im_middle|>## Return of functions.NAME:0\\n...<|im_end|>`."""

from __future__ import annotations

import json
from datetime import datetime

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

IM_SYSTEM = "<|im_system|>"
IM_USER = "<|im_user|>"
IM_ASSISTANT = "<|im_assistant|>"
IM_MIDDLE = "<|im_middle|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
TOOL_CALLS_SECTION_BEGIN = "<|tool_calls_section_begin|>"
TOOL_CALLS_SECTION_END = "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN = "<|tool_call_begin|>"
TOOL_CALL_ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"

KIMI_K2_SPECIAL_TOKENS = [
    IM_SYSTEM,
    IM_USER,
    IM_ASSISTANT,
    IM_MIDDLE,
    IM_END,
    THINK_START,
    THINK_END,
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_END,
]

DEFAULT_KIMI_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."

# Assistant turns after the last user message (the current agent loop) keep their reasoning; older
# ones render an empty think block, as Kimi K2 Thinking does, so history costs no reasoning tokens.
KIMI_K2_TEMPLATE = (
    "{%- macro text(c) -%}"
    "{%- if c is string -%}{{ c }}"
    "{%- elif c is none -%}"
    "{%- else -%}{%- for part in c -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- if tools -%}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>{%- endif -%}"
    "{%- if not messages or messages[0].role != 'system' -%}"
    "<|im_system|>system<|im_middle|>" + DEFAULT_KIMI_SYSTEM + "<|im_end|>"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}<|im_system|>system<|im_middle|>{{ text(m.content) }}<|im_end|>"
    "{%- elif m.role == 'user' -%}<|im_user|>user<|im_middle|>{{ text(m.content) }}<|im_end|>"
    "{%- elif m.role == 'tool' -%}"
    "<|im_system|>tool<|im_middle|>## Return of {{ m.tool_call_id }}\n{{ text(m.content) }}<|im_end|>"
    "{%- elif m.role == 'assistant' -%}"
    "<|im_assistant|>assistant<|im_middle|>"
    "{%- if loop.index0 > ns.last_user and m.reasoning_content -%}<think>{{ m.reasoning_content }}</think>"
    "{%- else -%}<think></think>{%- endif -%}"
    "{{ text(m.content) }}"
    "{%- if m.tool_calls -%}<|tool_calls_section_begin|>"
    "{%- for call in m.tool_calls -%}"
    "<|tool_call_begin|>{{ call.id }}<|tool_call_argument_begin|>"
    "{%- if call.function.arguments is string -%}{{ call.function.arguments }}"
    "{%- else -%}{{ call.function.arguments | tojson }}{%- endif -%}"
    "<|tool_call_end|>"
    "{%- endfor -%}"
    "<|tool_calls_section_end|>"
    "{%- endif -%}"
    "<|im_end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>"
    "{%- if thinking is not defined or thinking -%}<think>{%- else -%}<think></think>{%- endif -%}"
    "{%- endif -%}"
)


def _tojson(value, indent=None, ensure_ascii=False, separators=None, sort_keys=False):
    # Like transformers: no HTML escaping (jinja's own tojson would turn < into \u003c).
    return json.dumps(
        value, indent=indent, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys
    )


def _raise(message):
    raise TemplateError(message)


class TemplateError(ValueError):
    """The template refused the conversation (e.g. roles in an order it does not accept)."""


_env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
_env.filters["tojson"] = _tojson
_env.globals["raise_exception"] = _raise
_env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
_compiled: dict[str, object] = {}


def render_chat(
    template: str,
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
    **kwargs,
) -> str:
    """Render `messages` (OpenAI chat format, plain dicts) with a jinja chat template."""
    compiled = _compiled.get(template)
    if compiled is None:
        compiled = _compiled[template] = _env.from_string(template)
    return compiled.render(
        messages=messages,
        tools=tools or None,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token or "",
        eos_token=eos_token or "",
        **kwargs,
    )


def render_continuation(template: str, messages: list[dict], **kwargs) -> str:
    """The prompt that continues `messages[-1]` (an assistant message): the conversation rendered
    without a generation prompt, cut right after the last message's text, so the end token and
    anything the template closes it with are left out (vLLM's `continue_final_message`).

    With content the cut follows the content (past `</think>`); with reasoning only it follows the
    reasoning, so the think block stays open and the model goes on thinking."""
    last = messages[-1]
    content, reasoning = last.get("content") or "", last.get("reasoning_content") or ""
    if not content and not reasoning:
        return render_chat(template, messages[:-1], add_generation_prompt=True, **kwargs)
    rendered = render_chat(template, messages, add_generation_prompt=False, **kwargs)
    tail = content or reasoning
    at = rendered.rfind(tail)
    if at < 0:
        raise TemplateError(
            "the chat template does not render the final message's text; it cannot be continued"
        )
    return rendered[: at + len(tail)]


def prompt_opens_thinking(prompt: str) -> bool:
    """The rendered prompt ends inside an open think block of the last assistant message (the
    generation prompt's `<think>`, or a continued message's unfinished reasoning), so the output
    starts as reasoning."""
    if IM_ASSISTANT not in prompt:  # another model's template: only a trailing <think> opens one
        return prompt.rstrip().endswith(THINK_START)
    tail = prompt[prompt.rfind(IM_ASSISTANT) :]
    opened = tail.rfind(THINK_START)
    return opened >= 0 and THINK_END not in tail[opened:]


def prompt_ends_in_answer(prompt: str) -> bool:
    """The rendered prompt ends inside the last assistant message's answer, past its think block, so
    the output is content from its first character (a `<think>` there does not open reasoning)."""
    if IM_ASSISTANT not in prompt:
        return False
    tail = prompt[prompt.rfind(IM_ASSISTANT) :]
    return THINK_END in tail and IM_END not in tail
