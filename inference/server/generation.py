"""One chat completion in flight: feeds the engine's tokens through detokenization, stop strings and
the Kimi K2 parsers, and yields OpenAI-shaped deltas. Runs on the event loop; the engine calls back
from its own thread through `loop.call_soon_threadsafe`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from inference.engine import metrics
from inference.engine.llm_engine import LLMEngine
from inference.engine.sequence import SamplingParams
from inference.engine.tokenizer import IncrementalDetokenizer
from inference.server.parsers import (
    KimiK2ReasoningDetector,
    KimiK2ToolCallDetector,
    ToolCallArguments,
    ToolCallStart,
)
from inference.server.parsers.holdback import find_first, split_safe


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)  # OpenAI `logprobs.content` entries, one a token

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls or self.logprobs)


class StopStrings:
    """Cuts the text at the first stop string, holding back a tail that might begin one."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        hit = find_first(self.pending, self.stops)
        if hit is not None:
            out, self.pending, self.hit = self.pending[: hit[0]], "", True
            return out
        out, self.pending = split_safe(self.pending, self.stops)
        return out

    def finish(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Generation:
    def __init__(
        self,
        engine: LLMEngine,
        prompt_ids: list[int],
        params: SamplingParams,
        stops: list[str],
        starts_in_reasoning: bool,
        tools: list[dict] | None = None,
        starts_in_content: bool = False,
    ):
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.detok = IncrementalDetokenizer(engine.tokenizer, prompt_ids)
        self.stops = StopStrings(stops)
        self.reasoning = KimiK2ReasoningDetector(
            in_reasoning=starts_in_reasoning, in_content=starts_in_content
        )
        self.tools = KimiK2ToolCallDetector(tools)
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        metrics.PROMPT_TOKENS.inc(len(prompt_ids))
        self.seq = engine.submit(prompt_ids, params, self._on_token)  # may raise PromptTooLong / EngineFull

    @property
    def cached_tokens(self) -> int:
        return self.seq.num_cached_prompt

    def _on_token(self, seq, token, reason):  # engine thread
        logprobs = seq.last_logprobs if token is not None else None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (token, reason, logprobs))

    def abort(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "abort"
            self.engine.abort(self.seq)

    async def deltas(self):
        """Yield Delta objects until generation ends; `finish_reason` is set afterwards."""
        while True:
            token, reason, logprobs = await self.queue.get()
            delta = Delta()
            if logprobs is not None:
                delta.logprobs.append(self._logprob_entry(token, *logprobs))
            if token is not None:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                    metrics.TIME_TO_FIRST_TOKEN.observe(self.first_token_at - self.started)
                self.completion_tokens += 1
                self._parse(self.stops.feed(self.detok.add(token)), delta)
                if self.stops.hit:
                    self.engine.abort(self.seq)
                    reason = "stop"
            if reason is not None:
                self._parse(self.stops.finish(), delta)
                r, c = self.reasoning.finish()
                self._route(r, c, delta)
                self._tool_events(self.tools.finish(), delta)
                if reason == "abort" and self.stops.hit:
                    reason = "stop"
                if reason == "stop" and self.tools.has_calls:
                    reason = "tool_calls"
                self.finish_reason = reason
                if delta:
                    yield delta
                return
            if delta:
                yield delta

    def _logprob_entry(self, token: int, logprob: float, top: list[tuple[int, float]]) -> dict:
        def entry(token_id: int, value: float) -> dict:
            text = self.engine.tokenizer.decode([token_id])
            return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8", "replace"))}

        return {**entry(token, logprob), "top_logprobs": [entry(t, v) for t, v in top]}

    def _parse(self, text: str, delta: Delta) -> None:
        if text:
            r, c = self.reasoning.feed(text)
            self._route(r, c, delta)

    def _route(self, reasoning: str, content: str, delta: Delta) -> None:
        delta.reasoning += reasoning
        if content:
            self._tool_events(self.tools.feed(content), delta)

    def _tool_events(self, events, delta: Delta) -> None:
        for ev in events:
            if isinstance(ev, str):
                delta.content += ev
            elif isinstance(ev, ToolCallStart):
                delta.tool_calls.append(
                    {
                        "index": ev.index,
                        "id": ev.id,
                        "type": "function",
                        "function": {"name": ev.name, "arguments": ""},
                    }
                )
            elif isinstance(ev, ToolCallArguments):
                last = delta.tool_calls[-1] if delta.tool_calls else None
                if last is not None and last["index"] == ev.index:
                    last["function"]["arguments"] += ev.fragment
                else:
                    delta.tool_calls.append({"index": ev.index, "function": {"arguments": ev.fragment}})
