"""The streaming client for the model server: any OpenAI-compatible endpoint, via the `openai` package.

Speaks SGLang's Kimi K2 Thinking dialect: `reasoning_content` deltas, `tool_calls` deltas, thinking
on/off through `chat_template_kwargs`. Transient failures (connection refused, timeouts, 5xx, 429)
before the first chunk are retried with exponential backoff and full jitter.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import openai

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model call failed for good; `str()` is a message a user can read."""


@dataclass
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Chunk:
    """One streamed chunk, normalized: any of the fields may be empty."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict | None = None


# The SDK's own HTTP library (httpx, or httpx2 in newer openai releases): its transport errors can
# surface raw while a stream is being read.
_transport_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
try:
    import httpx2

    _transport_errors += (httpx2.TransportError,)
except ImportError:
    pass


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, *_transport_errors)):
        return True  # refused, reset, timed out
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIConnectionError):
        return "could not reach the model server"
    if isinstance(exc, openai.APIStatusError):
        return f"the model server answered HTTP {exc.status_code}"
    return f"the model server failed ({exc.__class__.__name__})"


class ModelClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "none",
        *,
        timeout: float = 600.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        temperature: float | None = None,
    ):
        self.model = model
        # None leaves sampling to the server (the model's own defaults); tiny models want it low.
        self.temperature = temperature
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self._openai = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "none",
            max_retries=0,  # we retry ourselves, with jitter, and only before the first chunk
            timeout=timeout,
        )

    def delay(self, attempt: int) -> float:
        """Full jitter: a uniform draw under an exponentially growing cap."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def stream(
        self, messages: list[dict], tools: list[dict] | None, *, thinking: bool, max_tokens: int
    ) -> Iterator[Chunk]:
        """Stream one completion. Closing the generator closes the HTTP response (the server aborts)."""
        kwargs = dict(
            model=self.model,
            # The messages travel in extra_body, which is sent as is: the `messages=` parameter goes
            # through the SDK's typed-dict transform, which costs ~1 ms per message per call and made
            # step 300 of a turn 100x slower than step 1 outside model time.
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=max_tokens,
            extra_body={"messages": messages, "chat_template_kwargs": {"thinking": thinking}},
        )
        if tools:
            kwargs["tools"] = tools
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        for attempt in range(self.max_attempts):
            started = False
            response = None
            try:
                response = self._openai.chat.completions.create(**kwargs)
                for raw in response:
                    started = True
                    yield normalize(raw)
                return
            except Exception as exc:
                if started or not is_transient(exc):
                    raise ModelError(describe(exc)) from exc
                if attempt + 1 == self.max_attempts:
                    raise ModelError(f"{describe(exc)}; gave up after {self.max_attempts} attempts") from exc
                wait = self.delay(attempt)
                log.warning("model call failed (%s); retry %d in %.2f s", exc, attempt + 1, wait)
                self.sleep(wait)
            finally:
                if response is not None:
                    response.close()


def normalize(raw) -> Chunk:
    chunk = Chunk()
    usage = getattr(raw, "usage", None)
    if usage is not None:
        chunk.usage = {
            "prompt_tokens": usage.prompt_tokens or 0,
            "completion_tokens": usage.completion_tokens or 0,
        }
    if not raw.choices:
        return chunk
    choice = raw.choices[0]
    delta = choice.delta
    chunk.finish_reason = choice.finish_reason
    if delta is None:
        return chunk
    extra = delta.model_extra or {}
    chunk.reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
    chunk.content = delta.content or ""
    for call in delta.tool_calls or []:
        fn = call.function
        chunk.tool_calls.append(
            ToolCallDelta(
                index=call.index,
                id=call.id,
                name=fn.name if fn else None,
                arguments=(fn.arguments or "") if fn else "",
            )
        )
    return chunk
