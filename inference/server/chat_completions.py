"""POST /v1/chat/completions: renders the request with the model's chat template, runs one
`Generation` and answers it as OpenAI does, streaming (SSE chunks) or as one message."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from inference.engine import metrics
from inference.engine.llm_engine import EngineFull, LLMEngine, PromptTooLong
from inference.engine.sequence import ForcedTokens, SamplingParams
from inference.server.chat_templates import (
    THINK_END,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALLS_SECTION_BEGIN,
    TemplateError,
    prompt_ends_in_answer,
    prompt_opens_thinking,
    render_chat,
    render_continuation,
)
from inference.server.generation import Delta, Generation
from inference.server.protocol import (
    ChatCompletionRequest,
    NamedToolChoice,
    Usage,
    completion_id,
    error_body,
    now,
)

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, type_="invalid_request_error", param=None, code=None
) -> JSONResponse:
    """An OpenAI-shaped error; text the client sent is echoed with any invalid characters escaped."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if param is not None:
        param = param.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


class ChatCompletions:
    def __init__(self, engine: LLMEngine, model_name: str, names: set[str], template: str):
        self.engine = engine
        self.model_name = model_name
        self.names = names
        self.template = template

    async def handle(self, body: ChatCompletionRequest, request: Request):
        engine, tokenizer = self.engine, self.engine.tokenizer
        if body.model not in self.names:
            metrics.REQUESTS.labels("not_found").inc()
            return error_response(
                404,
                f"The model `{body.model}` does not exist; this server serves `{self.model_name}`.",
                type_="not_found_error",
                param="model",
                code="model_not_found",
            )
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        for m in messages:
            if m["role"] == "developer":
                m["role"] = "system"
            if isinstance(m.get("content"), list):  # text parts only (validated)
                m["content"] = "".join(p["text"] for p in m["content"])
            m.setdefault("content", "")
        kwargs = dict(body.chat_template_kwargs or {})
        tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
        if body.tool_choice == "none":
            tools = []
        # Rendering and tokenizing a long conversation takes a while: off the event loop, so /health and
        # the streams in flight stay responsive.
        # `continue_final_message`: the last assistant message is rendered open and generation goes on
        # writing it; the answer then holds only the new text.
        render = render_continuation if body.continue_final_message else render_chat
        try:
            prompt = await asyncio.to_thread(
                render,
                self.template,
                messages,
                tools=tools or None,
                bos_token=tokenizer.bos_token,
                eos_token=tokenizer.eos_token,
                **kwargs,
            )
        except TemplateError as exc:
            return error_response(400, f"the chat template rejected the messages: {exc}", param="messages")
        except Exception as exc:  # a template bug or odd input should be a clear 400, not a 500
            log.warning("chat template failed: %s", exc)
            return error_response(400, f"could not render the chat template: {exc}", param="messages")
        prompt_ids = await asyncio.to_thread(tokenizer.encode, prompt)
        room = engine.max_model_len - len(prompt_ids)
        if room <= 0:
            metrics.REQUESTS.labels("too_long").inc()
            return error_response(
                400,
                f"This model's maximum context length is {engine.max_model_len} tokens, but the messages "
                f"take {len(prompt_ids)} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        # A max_tokens beyond the context is clamped (the agent asks for long thinking budgets).
        max_tokens = min(body.max_completion_tokens or body.max_tokens or room, room)
        params = SamplingParams(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            max_tokens=max_tokens,
            seed=body.seed,
            ignore_eos=body.ignore_eos,
            forced=self._forced_call(body, prompt),
            logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        )
        try:
            gen = Generation(
                engine,
                prompt_ids,
                params,
                body.stop,
                prompt_opens_thinking(prompt),
                tools=tools,
                starts_in_content=body.continue_final_message and prompt_ends_in_answer(prompt),
            )
        except PromptTooLong as exc:
            metrics.REQUESTS.labels("too_long").inc()
            return error_response(400, str(exc), param="messages", code="context_length_exceeded")
        except EngineFull as exc:
            metrics.REQUESTS.labels("busy").inc()
            return error_response(503, str(exc), type_="server_error", code="server_busy")
        metrics.REQUESTS.labels("accepted").inc()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(gen, body.model, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(gen, body.model, request)

    def _forced_call(self, body: ChatCompletionRequest, prompt: str) -> ForcedTokens | None:
        """For tool_choice `required` or a named tool: the tool-call section (and the named call's header)
        forced into the output where the reasoning ends."""
        choice = body.tool_choice
        text = TOOL_CALLS_SECTION_BEGIN + TOOL_CALL_BEGIN
        if isinstance(choice, NamedToolChoice):
            text += f"functions.{choice.function.name}:0{TOOL_CALL_ARGUMENT_BEGIN}"
        elif choice != "required":
            return None
        tokenizer = self.engine.tokenizer
        think_end = tokenizer.tokenizer.token_to_id(THINK_END)
        return ForcedTokens(
            ids=tokenizer.encode(text),
            after=frozenset({think_end} if think_end is not None else ()),
            stop_ids=frozenset(tokenizer.stop_ids),
            at_start=not prompt_opens_thinking(prompt),
        )


def _usage(gen: Generation) -> dict:
    return Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
        prompt_tokens_details={"cached_tokens": gen.cached_tokens},
    ).model_dump()


def _finish_reason(gen: Generation) -> str:
    # "error" and "abort" are engine-side; clients know stop/length/tool_calls.
    return gen.finish_reason if gen.finish_reason in ("stop", "length", "tool_calls") else "stop"


async def _complete(gen: Generation, model: str, request: Request) -> JSONResponse:
    reasoning, content, calls, logprobs = [], [], {}, []
    stream = gen.deltas()
    try:
        while True:
            next_delta = asyncio.ensure_future(anext(stream))
            while not next_delta.done():
                # Poll for a vanished client so an abandoned request stops using the engine.
                await asyncio.wait({next_delta}, timeout=0.5)
                if not next_delta.done() and await request.is_disconnected():
                    next_delta.cancel()
                    gen.abort()
                    return error_response(499, "client disconnected")
            try:
                delta = next_delta.result()
            except StopAsyncIteration:
                break
            reasoning.append(delta.reasoning)
            logprobs += delta.logprobs
            content.append(delta.content)
            for tc in delta.tool_calls:
                call = calls.setdefault(
                    tc["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if "id" in tc:
                    call["id"] = tc["id"]
                    call["function"]["name"] = tc["function"]["name"]
                call["function"]["arguments"] += tc["function"].get("arguments", "")
    finally:
        gen.abort()
    if gen.finish_reason == "error":
        return error_response(
            500, "generation failed inside the engine; see the server log", type_="server_error"
        )
    message = {"role": "assistant", "content": "".join(content) or (None if calls else "")}
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return JSONResponse(
        {
            "id": completion_id(),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish_reason(gen),
                    "logprobs": {"content": logprobs} if gen.seq.params.logprobs is not None else None,
                }
            ],
            "usage": _usage(gen),
        }
    )


async def _stream(gen: Generation, model: str, include_usage: bool):
    cid, created = completion_id(), now()

    def chunk(delta: dict, finish=None, usage=None, choices=True, logprobs=None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        body["choices"] = (
            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}] if choices else []
        )
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in gen.deltas():
            # A delta's token logprobs ride on its first chunk (on an empty one while its text is held back).
            pieces = list(_split(delta)) or [{}]
            for i, piece in enumerate(pieces):
                yield chunk(
                    piece, logprobs={"content": delta.logprobs} if i == 0 and delta.logprobs else None
                )
        if gen.finish_reason == "error":
            yield f"data: {json.dumps(error_body('generation failed inside the engine', 'server_error'))}\n\n"
        else:
            yield chunk({}, finish=_finish_reason(gen))
            if include_usage:
                yield chunk({}, usage=_usage(gen), choices=False)
        yield "data: [DONE]\n\n"
    finally:
        # Also reached when the client disconnects (the response task is cancelled): free the slot.
        gen.abort()


def _split(delta: Delta):
    """One SSE chunk per kind, in order: reasoning, content, then each tool call's start and arguments."""
    if delta.reasoning:
        yield {"reasoning_content": delta.reasoning}
    if delta.content:
        yield {"content": delta.content}
    for tc in delta.tool_calls:
        args = tc["function"].get("arguments", "")
        if "id" in tc:
            yield {"tool_calls": [{**tc, "function": {"name": tc["function"]["name"], "arguments": ""}}]}
            if args:
                yield {"tool_calls": [{"index": tc["index"], "function": {"arguments": args}}]}
        else:
            yield {"tool_calls": [tc]}
