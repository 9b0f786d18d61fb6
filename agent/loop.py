"""The agent loop: think → call tools → observe, step after step, yielding `agent.events` Events.

No Django here. The caller gives the transcript so far (OpenAI chat messages) and consumes events;
the loop appends each step's assistant message and tool results to that same list, so a worker that
persists steps can rebuild it and resume from the next step.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace

from . import events as ev
from .client import ContinuationRefused, ModelClient, ModelError
from .context import estimate_tokens, fit_context
from .files import with_files_prompt
from .tools import Tool, ToolContext, ToolError, ToolResult, tools_for, truncate

log = logging.getLogger(__name__)


def system_prompt(today: datetime.date | None = None) -> str:
    today = today or datetime.date.today()
    return (
        f"You are kimiweb, a careful research assistant. Today is {today.isoformat()}. Think step by step. "
        "Use the tools when they help: web_search to find sources, browse to read a page, python to "
        "compute. Check important facts in more than one source, cite the URLs you relied on, and say "
        "plainly when you could not find something."
    )


WRAP_UP_NOTE = (
    "[system] You have reached the limit of tool use for this answer. Do not call tools; write your "
    "final answer now from what you have found."
)


@dataclass
class LoopConfig:
    thinking: bool = True
    max_steps: int = 300
    max_step_tokens: int = 4096
    max_turn_tokens: int = 2_000_000
    max_turn_seconds: float = 3600.0
    context_tokens: int = 32768
    tool_result_chars: int = 8000
    tool_timeout: float = 60.0
    parallel_tools: int = 4
    keep_tool_outputs: int = 3
    cancel_poll_seconds: float = 0.05  # how often the (possibly remote) cancel flag is consulted


@dataclass
class PartialStep:
    """What an unfinished step (its worker died mid-stream) had published: the resumed turn continues it."""

    reasoning: str = ""
    content: str = ""


INTERRUPTED = "interrupted"  # the finish_reason of a partial step the model server could not continue
TOOL_CUT_OFF = "the worker stopped while this tool ran"
# What the model reads for a call its worker died in; such a call may be made again.
TOOL_CUT_OFF_RESULT = f"Error: {TOOL_CUT_OFF}; call it again if you still need its result."


@dataclass
class TurnState:
    """What the loop has spent so far; a resumed turn starts from the persisted values."""

    step: int = 0  # index of the next step
    tokens_in: int = 0
    tokens_out: int = 0
    elapsed: float = 0.0
    reasoning: list[str] = field(default_factory=list)  # each finished step's reasoning
    # Step `step` began and was cut off with this text: it is continued, not started again.
    partial: PartialStep | None = None


@dataclass
class _Call:
    index: int
    id: str
    name: str
    arguments: str = ""


@dataclass
class _Streamed:
    """What one model call produced."""

    reasoning: str = ""
    content: str = ""
    calls: list[_Call] = field(default_factory=list)  # in the model's order
    finish_reason: str = ""
    usage: dict = field(default_factory=dict)
    error: ModelError | None = None


@dataclass
class StepOutcome:
    """The record of one step: how it ended, and the turn's last event when the turn ends with it."""

    index: int
    finish_reason: str
    text: str = ""
    calls: list[str] = field(default_factory=list)  # the ids of the tool calls the step ran
    final: ev.TurnFinished | None = None


class AgentLoop:
    def __init__(
        self,
        client: ModelClient,
        config: LoopConfig | None = None,
        tools: dict[str, Tool] | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
        tool_context: ToolContext | None = None,
    ):
        self.client = client
        self.config = config or LoopConfig()
        self.tool_context = tool_context or ToolContext()  # what the host injects (corpus, search, files)
        self.tools = tools_for(self.tool_context) if tools is None else tools
        self._is_cancelled = is_cancelled
        self._cancel_seen = False
        self._cancel_checked = 0.0

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancel_seen and now - self._cancel_checked >= self.config.cancel_poll_seconds:
            self._cancel_checked = now
            self._cancel_seen = bool(self._is_cancelled())
        return self._cancel_seen

    def run(self, messages: list[dict], state: TurnState | None = None) -> Iterator[ev.Event]:
        """Steps until one ends the turn; the last event is always a TurnFinished."""
        state = state or TurnState()
        with_files_prompt(messages, self.tool_context.files_library)  # names the attached files, if any
        started = time.monotonic() - state.elapsed
        seen_calls = _calls_in_turn(messages)
        yield ev.TurnStarted(thinking=self.config.thinking, model=self.client.model)
        # Not a `with` block: its exit would wait for a tool thread that ignores cancellation.
        pool = ThreadPoolExecutor(max_workers=self.config.parallel_tools, thread_name_prefix="tool")
        try:
            while True:
                if self.cancelled():
                    yield self._finish(state, "cancelled", "")
                    return
                state.elapsed = time.monotonic() - started
                outcome = yield from self._step(messages, state, pool, seen_calls)
                if outcome.final is not None:
                    yield outcome.final
                    return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _step(self, messages: list[dict], state: TurnState, pool: ThreadPoolExecutor, seen_calls: dict):
        """One model call and the tools it asks for; yields the step's events, returns its StepOutcome."""
        cfg = self.config
        wrap_up = (
            state.step >= cfg.max_steps - 1
            or state.tokens_in + state.tokens_out >= cfg.max_turn_tokens
            or state.elapsed >= cfg.max_turn_seconds
        )
        index = state.step
        partial, state.partial = state.partial, None
        if partial is None or not (partial.reasoning or partial.content):
            if partial is None:  # a resumed step that had published nothing has its start already
                yield ev.StepStarted(index=index)
            out = yield from self._stream(self._prompt(messages, wrap_up), tools=not wrap_up)
        else:
            out = yield from self._continue(messages, wrap_up, partial)
            if isinstance(out.error, ContinuationRefused):
                # Keep what was shown as a finished, labelled attempt; the next step starts afresh.
                log.warning(
                    "step %d not continued (%s); keeping it as an interrupted attempt", index, out.error
                )
                state.step += 1
                state.reasoning.append(partial.reasoning)
                yield ev.StepFinished(index=index, finish_reason=INTERRUPTED)
                return StepOutcome(index, INTERRUPTED, partial.content)
        state.step += 1
        state.reasoning.append(out.reasoning)
        calls = [c.id for c in out.calls]

        if out.error is not None:
            log.warning("turn failed at step %d: %s", index, out.error)
            yield from self._cancel_calls(out.calls, "the model call failed")
            yield ev.StepFinished(index=index, finish_reason="error", usage=out.usage)
            final = self._finish(state, "failed", f"The model failed: {out.error}", out.content)
            return StepOutcome(index, "error", out.content, calls, final)

        state.tokens_in += out.usage.get("prompt_tokens", 0)
        state.tokens_out += out.usage.get("completion_tokens", 0)
        if self.cancelled():
            yield from self._cancel_calls(out.calls, "stopped by the user")
            yield ev.StepFinished(index=index, finish_reason="cancelled", usage=out.usage)
            return StepOutcome(
                index, "cancelled", out.content, calls, self._finish(state, "cancelled", "", out.content)
            )

        assistant = {"role": "assistant", "content": out.content, "reasoning_content": out.reasoning}
        if out.calls and not wrap_up:
            assistant["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in out.calls
            ]
            messages.append(assistant)
            results = yield from self._run_tools(pool, out.calls, seen_calls, index)
            messages += [{"role": "tool", "tool_call_id": c.id, "content": results[c.id]} for c in out.calls]
            reason = out.finish_reason or "tool_calls"
            yield ev.StepFinished(index=index, finish_reason=reason, usage=out.usage)
            final = self._finish(state, "cancelled", "", out.content) if self.cancelled() else None
            return StepOutcome(index, reason, out.content, calls, final)

        messages.append(assistant)
        reason = out.finish_reason or "stop"
        yield ev.StepFinished(index=index, finish_reason=reason, usage=out.usage)
        if wrap_up and not out.content:
            final = self._finish(state, "failed", "The step or time budget ran out before a final answer.")
        else:
            final = self._finish(state, "done", "", out.content)
        return StepOutcome(index, reason, out.content, calls, final)

    def _prompt(self, messages: list[dict], wrap_up: bool) -> list[dict]:
        """The transcript fitted to the context budget; at the limit, with the note to answer now."""
        cfg = self.config
        budget = cfg.context_tokens - cfg.max_step_tokens
        if not wrap_up:
            return fit_context(messages, budget, cfg.keep_tool_outputs)
        note = {"role": "user", "content": WRAP_UP_NOTE}
        return [*fit_context(messages, budget - estimate_tokens(note), cfg.keep_tool_outputs), note]

    def _continue(self, messages: list[dict], wrap_up: bool, partial: PartialStep):
        """Go on with a step that was cut off: the transcript ends in its unfinished assistant message
        and the server continues it; what it produced includes the partial text."""
        open_message = {
            "role": "assistant",
            "content": partial.content,
            "reasoning_content": partial.reasoning,
        }
        prompt = [*self._prompt(messages, wrap_up), open_message]
        out = yield from self._stream(prompt, tools=not wrap_up, continue_final=True)
        if not isinstance(out.error, ContinuationRefused):
            out.reasoning, out.content = partial.reasoning + out.reasoning, partial.content + out.content
        return out

    def _stream(self, prompt: list[dict], tools: bool, continue_final: bool = False):
        """Stream one model call, yielding its deltas as events; returns what it produced."""
        schemas = [tool.schema() for tool in self.tools.values()] if tools else None
        reasoning, content, calls = [], [], {}
        out = _Streamed()
        stream = self.client.stream(
            prompt,
            schemas,
            thinking=self.config.thinking,
            max_tokens=self.config.max_step_tokens,
            continue_final=continue_final,
        )
        try:
            for chunk in stream:
                if self.cancelled():
                    break
                if chunk.status is not None:
                    yield ev.TurnStatus(text=chunk.status)
                if chunk.reasoning:
                    reasoning.append(chunk.reasoning)
                    yield ev.ReasoningDelta(text=chunk.reasoning)
                if chunk.content:
                    content.append(chunk.content)
                    yield ev.ContentDelta(text=chunk.content)
                for delta in chunk.tool_calls:
                    call = calls.get(delta.index)
                    if call is None:
                        name = delta.name or ""
                        call_id = delta.id or f"functions.{name}:{delta.index}"
                        call = calls[delta.index] = _Call(delta.index, call_id, name)
                        yield ev.ToolCallStarted(call_id=call_id, index=delta.index, name=name)
                    elif delta.name and not call.name:
                        call.name = delta.name
                    if delta.arguments:
                        call.arguments += delta.arguments
                        yield ev.ToolCallArguments(call_id=call.id, delta=delta.arguments)
                if chunk.finish_reason:
                    out.finish_reason = chunk.finish_reason
                if chunk.usage:
                    out.usage = chunk.usage
        except ModelError as exc:
            out.error = exc
        finally:
            stream.close()  # on cancel this closes the HTTP response: the server aborts generation
        out.reasoning, out.content = "".join(reasoning), "".join(content)
        out.calls = [calls[i] for i in sorted(calls)]
        return out

    def _finish(self, state: TurnState, status: str, error: str, content: str = "") -> ev.TurnFinished:
        reasoning = "\n\n".join(r for r in state.reasoning if r)
        return ev.TurnFinished(status=status, error=error, content=content, reasoning=reasoning)

    def _cancel_calls(self, calls, why: str) -> Iterator[ev.Event]:
        for call in calls:
            yield ev.ToolCallFinished(
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
                result="",
                status="cancelled",
                error=why,
            )

    def _run_tools(self, pool: ThreadPoolExecutor, calls: list[_Call], seen: dict, step: int):
        """Run one step's calls in parallel; yield their events; return {call_id: model-visible result}."""
        cfg = self.config
        results: dict[str, str] = {}
        cancel = threading.Event()
        pending: dict[Future, tuple[_Call, float]] = {}
        for call in calls:
            yield ev.ToolCallRunning(call_id=call.id, name=call.name, arguments=call.arguments)
        for call in calls:
            immediate = self._precheck(call, seen, step)
            if immediate is not None:
                results[call.id] = immediate.text
                yield ev.ToolCallFinished(
                    call_id=call.id,
                    name=call.name,
                    arguments=call.arguments,
                    result=immediate.text,
                    status="error",
                    error=immediate.error,
                )
                continue
            ctx = replace(
                self.tool_context, cancelled=cancel, timeout=cfg.tool_timeout, max_chars=cfg.tool_result_chars
            )
            future = pool.submit(_run_one, self.tools[call.name], json.loads(call.arguments or "{}"), ctx)
            pending[future] = (call, time.monotonic())
        hard_deadline = cfg.tool_timeout + 5.0  # a tool that ignores its own timeout is abandoned
        while pending:
            done, _ = wait(pending, timeout=cfg.cancel_poll_seconds, return_when=FIRST_COMPLETED)
            for future in done:
                call, began = pending.pop(future)
                result = future.result()
                results[call.id] = result.text
                yield ev.ToolCallFinished(
                    call_id=call.id,
                    name=call.name,
                    arguments=call.arguments,
                    result=result.text,
                    status="error" if result.error else "done",
                    error=result.error,
                    duration_ms=int((time.monotonic() - began) * 1000),
                    files=[asdict(f) for f in result.files],
                )
            stop = self.cancelled()
            now = time.monotonic()
            for future, (call, began) in list(pending.items()):
                if stop or now - began > hard_deadline:
                    cancel.set()  # the sandbox kills its process group on this flag
                    why = "stopped by the user" if stop else f"timed out after {cfg.tool_timeout:.0f} s"
                    if stop:
                        future.cancel()
                    if stop or not future.done():
                        pending.pop(future)
                        results[call.id] = f"Error: {why}."
                        yield ev.ToolCallFinished(
                            call_id=call.id,
                            name=call.name,
                            arguments=call.arguments,
                            result=results[call.id],
                            status="cancelled" if stop else "error",
                            error=why,
                            duration_ms=int((now - began) * 1000),
                        )
        return results

    def _precheck(self, call: _Call, seen: dict, step: int) -> ToolResult | None:
        """Answer calls that must not run: unknown tools, malformed arguments, exact repeats."""
        if call.name not in self.tools:
            names = ", ".join(self.tools) or "none"
            return ToolResult(
                f"Error: there is no tool named {call.name!r}. Available tools: {names}.", "unknown tool"
            )
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolResult(
                f"Error: the arguments are not valid JSON ({exc}). Call {call.name} again with a JSON object "
                "that matches its schema.",
                "malformed arguments",
            )
        if not isinstance(args, dict):
            return ToolResult(
                f"Error: the arguments must be a JSON object, not {type(args).__name__}.",
                "malformed arguments",
            )
        key = (call.name, json.dumps(args, sort_keys=True))
        if key in seen:
            return ToolResult(
                f"Note: you already called {call.name} with exactly these arguments in step {seen[key] + 1}; "
                "its result is above (or was hidden to save context). Do not repeat the same call: use what "
                "you have, or try something different.",
                "repeated call",
            )
        seen[key] = step
        return None


def _run_one(tool: Tool, arguments: dict, ctx: ToolContext) -> ToolResult:
    try:
        result = tool.run(arguments, ctx)
    except ToolError as exc:
        return ToolResult(f"Error: {exc}", str(exc))
    except Exception as exc:  # a tool bug must not end the turn; the model sees it and the log keeps it
        log.exception("tool %s failed", tool.name)
        return ToolResult(
            f"Error: the tool failed: {exc.__class__.__name__}: {exc}", f"{exc.__class__.__name__}: {exc}"
        )
    return replace(result, text=truncate(result.text, ctx.max_chars))


def _calls_in_turn(messages: list[dict]) -> dict:
    """The calls already made since the last user message (for the loop guard on a resumed turn);
    a call cut off by a dead worker does not count."""
    seen: dict = {}
    step = 0
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
    cut_off = {
        m.get("tool_call_id")
        for m in messages[start:]
        if m.get("role") == "tool" and m.get("content") == TOOL_CUT_OFF_RESULT
    }
    for message in messages[start:]:
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            if call.get("id") in cut_off:
                continue
            try:
                args = json.loads(call["function"]["arguments"] or "{}")
                seen.setdefault((call["function"]["name"], json.dumps(args, sort_keys=True)), step)
            except (json.JSONDecodeError, TypeError):
                pass
        step += 1
    return seen
