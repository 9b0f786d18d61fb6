"""OpenAI Chat Completions protocol as pydantic models (requests validated, responses built)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


class StreamOptions(BaseModel):
    include_usage: bool = False


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in `value` that holds a lone UTF-16 surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key, path) or _lone_surrogate(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}.{i}")
            if found:
                return found
    return None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, v):
        for part in v if isinstance(v, list) else []:
            kind = part.get("type")
            if kind != "text":
                raise ValueError(
                    f"content parts of type {kind!r} are not supported; this server reads text only"
                )
            TextPart.model_validate(part)
        return v


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


# Parameters of OpenAI's API this server does not implement, with the value that means "not used".
UNSUPPORTED = {
    "response_format": lambda v: v is None or v == {"type": "text"},
    "logit_bias": lambda v: not v,
    "presence_penalty": lambda v: not v,
    "frequency_penalty": lambda v: not v,
    "parallel_tool_calls": lambda v: v is None or v is True,
    "functions": lambda v: v is None,
    "function_call": lambda v: v is None,
    "audio": lambda v: v is None,
    "modalities": lambda v: v is None or v == ["text"],
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    separate_reasoning: bool = True
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # vLLM's continuation: the last (assistant) message is rendered open and the model goes on writing it.
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @model_validator(mode="before")
    @classmethod
    def _text_is_valid_unicode(cls, data):
        path = _lone_surrogate(data, "")
        if path is not None:
            raise PydanticCustomError(
                "invalid_text",
                "{param} holds a lone UTF-16 surrogate, which is not valid text",
                {"param": path},
            )
        if isinstance(data, dict):
            for name, unused in UNSUPPORTED.items():
                if not unused(data.get(name)):
                    raise PydanticCustomError(
                        "unsupported_parameter", "`{param}` is not supported by this server", {"param": name}
                    )
        return data

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self):
        names = [t.function.name for t in self.tools or []]
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise PydanticCustomError(
                "unknown_tool",
                "tool_choice names {name}, which is not in `tools`",
                {"param": "tool_choice", "name": repr(self.tool_choice.function.name)},
            )
        if self.continue_final_message:
            if self.add_generation_prompt:
                raise PydanticCustomError(
                    "continue_with_generation_prompt",
                    "`continue_final_message` needs `add_generation_prompt: false`",
                    {"param": "add_generation_prompt"},
                )
            if self.messages[-1].role != "assistant":
                raise PydanticCustomError(
                    "continue_needs_assistant",
                    "`continue_final_message` needs an assistant message last",
                    {"param": "messages"},
                )
            if self.messages[-1].tool_calls:
                raise PydanticCustomError(
                    "continue_tool_calls",
                    "`continue_final_message` cannot continue a message that holds tool calls",
                    {"param": "messages"},
                )
        elif not self.add_generation_prompt:
            raise PydanticCustomError(
                "no_generation_prompt",
                "`add_generation_prompt: false` is only supported with `continue_final_message: true`",
                {"param": "add_generation_prompt"},
            )
        if self.tool_choice == "required" and not names:
            raise PydanticCustomError(
                "no_tools",
                "tool_choice `required` needs at least one tool in `tools`",
                {"param": "tool_choice"},
            )
        return self

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop takes up to 16 non-empty strings")
        return stops


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
