"""The streaming client for the model server: any OpenAI-compatible endpoint, via the `openai` package.

Speaks SGLang's Kimi K2 Thinking dialect: `reasoning_content` deltas, `tool_calls` deltas, thinking
on/off through `chat_template_kwargs`.

A model server may restart under a running turn. Transient failures (connection refused or reset,
timeouts, 5xx, 429) are retried with exponential backoff and full jitter for `retry_seconds`
(`LLM_RETRY_SECONDS`, default 60) - before the first chunk and after it. While it waits the stream
yields `Chunk(status=WAITING)`, and `Chunk(status="")` once the server answers again, so the turn can
say "waiting for the model server".

After the first chunk the step resumes by replay: the same request is sent again and the part of the
new answer that was already delivered is checked against what was delivered and skipped, so the
caller sees one uninterrupted answer. This works with any OpenAI-compatible server that decodes
deterministically (greedy, as kimiweb's default model is served). A server that answers differently
the second time (sampling) cannot be resumed faithfully: the call then fails with a readable message
and the caller keeps the text delivered so far. (Prefix continuation with `continue_final_message`
would serve sampling servers mid-stream too, but a server that does not know the flag may ignore it
and answer a different prompt, so the replay is the one way that is right everywhere it claims to
work.)

`continue_final=True` is for a step whose worker died: the last message is the step's unfinished
assistant message and the server goes on writing it (vLLM's `continue_final_message`, also served
by `inference/server`). A server that refuses it with HTTP 400 (an API without the flag that
rejects unknown parameters) raises `ContinuationRefused`, and the loop keeps the cut text as an
earlier attempt.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import openai

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model call failed for good; `str()` is a message a user can read."""


class ContinuationRefused(ModelError):
    """The server answered a `continue_final_message` request with HTTP 400: it cannot continue a
    message (a remote model whose API lacks the flag)."""


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
    # Not model output: None, or a line for the turn's status ("" clears it).
    status: str | None = None


WAITING = "Waiting for the model server…"


def retry_seconds_from_env() -> float:
    """`LLM_RETRY_SECONDS`: how long a call keeps retrying a model server that does not answer."""
    return float(os.environ.get("LLM_RETRY_SECONDS", "60"))


# The SDK's own HTTP library (httpx, or httpx2 in newer openai releases): its transport errors can
# surface raw while a stream is being read.
_transport_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
try:
    import httpx2

    _transport_errors += (httpx2.TransportError,)
except ImportError:
    pass


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, StreamCut, *_transport_errors)):
        return True  # refused, reset, timed out
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, (openai.APIConnectionError, StreamCut, *_transport_errors)):
        return "could not reach the model server"
    if isinstance(exc, openai.APIStatusError):
        return f"the model server answered HTTP {exc.status_code}"
    return f"the model server failed ({exc.__class__.__name__})"


class _Replay:
    """What one call has delivered so far, and how much of a replayed answer has been matched to it."""

    def __init__(self):
        self.reasoning = ""
        self.content = ""
        self.calls: dict[int, str] = {}  # index -> arguments delivered
        self.matched = {"reasoning": 0, "content": 0}
        self.matched_args: dict[int, int] = {}

    def deliver(self, chunk: Chunk) -> None:
        """Record `chunk` as delivered; the response it came from has then matched it too."""
        self.reasoning += chunk.reasoning
        self.content += chunk.content
        self.matched["reasoning"] += len(chunk.reasoning)
        self.matched["content"] += len(chunk.content)
        for delta in chunk.tool_calls:
            self.calls[delta.index] = self.calls.get(delta.index, "") + delta.arguments
            self.matched_args[delta.index] = self.matched_args.get(delta.index, 0) + len(delta.arguments)

    def restart(self) -> None:
        self.matched = {"reasoning": 0, "content": 0}
        self.matched_args = {}

    def _new_part(self, delivered: str, at: int, text: str) -> tuple[str, int]:
        """The part of `text` beyond what was delivered; raises _Diverged when they disagree."""
        overlap = delivered[at : at + len(text)]
        if text[: len(overlap)] != overlap:
            raise _Diverged
        return text[len(overlap) :], at + len(overlap)

    def fresh(self, chunk: Chunk) -> Chunk | None:
        """The replayed `chunk` less what was already delivered (None when nothing is left)."""
        out = Chunk(finish_reason=chunk.finish_reason, usage=chunk.usage)
        out.reasoning, self.matched["reasoning"] = self._new_part(
            self.reasoning, self.matched["reasoning"], chunk.reasoning
        )
        if chunk.content and self.matched["reasoning"] < len(self.reasoning):
            raise _Diverged  # the answer began before the delivered thinking was repeated
        out.content, self.matched["content"] = self._new_part(
            self.content, self.matched["content"], chunk.content
        )
        for delta in chunk.tool_calls:
            if delta.index not in self.calls:
                out.tool_calls.append(delta)
                continue
            arguments, self.matched_args[delta.index] = self._new_part(
                self.calls[delta.index], self.matched_args.get(delta.index, 0), delta.arguments
            )
            if arguments:  # id and name were delivered with the call's first fragment
                out.tool_calls.append(ToolCallDelta(index=delta.index, arguments=arguments))
        if out.reasoning or out.content or out.tool_calls or out.finish_reason or out.usage:
            return out
        return None


class _Diverged(Exception):
    pass


class StreamCut(Exception):
    """The server's stream ended before the completion did (no finish_reason): it went away."""


class ModelClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "none",
        *,
        timeout: float = 600.0,
        retry_seconds: float | None = None,
        max_attempts: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        temperature: float | None = None,
    ):
        self.model = model
        # None leaves sampling to the server (the model's own defaults); tiny models want it low.
        self.temperature = temperature
        self.retry_seconds = retry_seconds_from_env() if retry_seconds is None else retry_seconds
        self.max_attempts = max_attempts  # None: as many as fit in retry_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.clock = clock
        self._openai = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "none",
            max_retries=0,  # we retry ourselves, with jitter and a time budget
            timeout=timeout,
        )

    def delay(self, attempt: int) -> float:
        """Full jitter: a uniform draw under an exponentially growing cap."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def stream(
        self,
        messages: list[dict],
        tools: list[dict] | None,
        *,
        thinking: bool,
        max_tokens: int,
        continue_final: bool = False,
    ) -> Iterator[Chunk]:
        """Stream one completion. Closing the generator closes the HTTP response (the server aborts).

        `continue_final`: `messages[-1]` is an unfinished assistant message and the model goes on
        writing it (vLLM's `continue_final_message`); the chunks hold only the new text. A server that
        answers that with HTTP 400 raises ContinuationRefused."""
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
        if continue_final:
            kwargs["extra_body"] |= {"continue_final_message": True, "add_generation_prompt": False}
        if tools:
            kwargs["tools"] = tools
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        replay = _Replay()
        waiting_since: float | None = None  # set while the server does not answer
        failures = 0  # in a row, since the server last streamed
        delivered_any = False
        while True:
            response = None
            try:
                response = self._openai.chat.completions.create(**kwargs)
                replay.restart()
                replaying = delivered_any  # this answer repeats what was delivered, then goes on
                finished = False
                for raw in response:
                    if waiting_since is not None:
                        log.info("model server answers again after %.1f s", self.clock() - waiting_since)
                        waiting_since, failures = None, 0
                        yield Chunk(status="")
                    chunk = normalize(raw)
                    if replaying:
                        chunk = replay.fresh(chunk)
                        if chunk is None:
                            continue
                    replay.deliver(chunk)
                    delivered_any = delivered_any or bool(
                        chunk.reasoning or chunk.content or chunk.tool_calls
                    )
                    finished = finished or chunk.finish_reason is not None
                    yield chunk
                if not finished:
                    # A killed server's kernel ends the connection cleanly (FIN): the SSE stream just
                    # stops, without a finish_reason. That is a crash, not an answer.
                    raise StreamCut
                return
            except _Diverged:
                raise ModelError(
                    "the model server restarted mid-answer and answered differently the second time; "
                    "the text so far is kept"
                ) from None
            except Exception as exc:
                if continue_final and isinstance(exc, openai.BadRequestError):
                    raise ContinuationRefused(f"{describe(exc)} to a continuation: {exc.message}") from exc
                if not is_transient(exc):
                    raise ModelError(describe(exc)) from exc
                now = self.clock()
                if waiting_since is None:
                    waiting_since = now
                    yield Chunk(status=WAITING)
                failures += 1
                waited = now - waiting_since
                if (self.max_attempts is not None and failures >= self.max_attempts) or (
                    waited >= self.retry_seconds
                ):
                    raise ModelError(
                        f"{describe(exc)}; gave up after {failures} attempts in {waited:.0f} s"
                    ) from exc
                wait = min(self.delay(failures - 1), max(0.0, self.retry_seconds - waited))
                log.warning("model call failed (%s); retry %d in %.2f s", exc, failures, wait)
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
