"""The CPU engine: a model loop in its own thread that takes requests at any time, batches them
continuously, and reports each generated token through the request's callback."""

from __future__ import annotations

import logging
import queue
import threading
import time

import torch

from inference.engine import metrics, openmp
from inference.engine.block_manager import BlockManager
from inference.engine.loader import LoadedModel
from inference.engine.model_runner import ModelRunner
from inference.engine.sampler import sample
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import SamplingParams, Sequence, Status

log = logging.getLogger(__name__)


class EngineFull(Exception):
    """Too many requests already wait for memory: the caller should answer 503."""


class PromptTooLong(ValueError):
    """The prompt (plus one generated token) can never fit the context or the KV cache."""


class LLMEngine:
    def __init__(
        self,
        loaded: LoadedModel,
        kv_cache_tokens: int = 65536,
        block_size: int = 16,
        max_running: int = 32,
        max_waiting: int = 256,
        prefill_chunk: int = 512,
        dtype: torch.dtype = torch.bfloat16,
        prefix_cache: bool = True,
    ):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        cfg = loaded.config
        num_blocks = max(2, kv_cache_tokens // block_size)
        # One sequence may use the whole cache but no more; beyond that it could never be scheduled.
        self.max_model_len = min(int(cfg.get("max_position_embeddings", 8192)), (num_blocks - 1) * block_size)
        self.blocks = BlockManager(num_blocks, block_size, prefix_cache)
        self.scheduler = Scheduler(self.blocks, max_running, prefill_chunk)
        self.runner = ModelRunner(loaded.model, num_blocks, block_size, dtype)
        self.max_waiting = max_waiting
        self.capacity_tokens = num_blocks * block_size
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopped = False
        # From here on the engine thread does the tensor work: free the OpenMP workers loading left behind.
        openmp.release_this_threads_pool()
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    # ---- called from any thread ------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, on_token) -> Sequence:
        """Queue a request. on_token(seq, token_id | None, finish_reason | None) runs in the engine thread."""
        if len(prompt_ids) == 0:
            raise PromptTooLong("the prompt is empty")
        if len(prompt_ids) + 1 > self.max_model_len:
            raise PromptTooLong(
                f"the prompt has {len(prompt_ids)} tokens; this server's context holds {self.max_model_len - 1}"
            )
        if len(self.scheduler.waiting) + self._inbox.qsize() >= self.max_waiting:
            raise EngineFull("the server is at capacity; retry shortly")
        seq = Sequence(prompt_ids, params, on_token)
        self._inbox.put(("add", seq))
        self._wake.set()
        return seq

    def abort(self, seq: Sequence) -> None:
        """Stop generating for `seq` (its client went away); its cache blocks are freed at the next step."""
        self._inbox.put(("abort", seq))
        self._wake.set()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def stats(self) -> dict:
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "free_blocks": self.blocks.num_free,
            "prefix_cache_queries": self.blocks.queries,
            "prefix_cache_hits": self.blocks.hits,
        }

    # ---- the engine thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stopped:
                self._drain_inbox()
                if not self.scheduler.has_work():
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                try:
                    self._step()
                except Exception:  # a bug in one step must not kill the server: fail the batch, go on
                    log.exception("engine step failed; failing the running requests")
                    for seq in list(self.scheduler.running) + list(self.scheduler.waiting):
                        self._finish(seq, "error")
                self._update_gauges()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, seq = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                if not seq.aborted:
                    self.scheduler.add(seq)
            elif seq.status is not Status.FINISHED:
                seq.aborted = True
                self._finish(seq, "abort")

    def _step(self) -> None:
        step = self.scheduler.schedule()
        if step.prefill is not None:
            seq = step.prefill
            logits = self.runner.prefill(seq, step.prefill_end)
            self.blocks.register_computed(seq)
            if seq.num_computed == len(seq):
                self._append(seq, sample(logits, [seq])[0])
        if step.decode:
            started = time.perf_counter()
            logits = self.runner.decode(step.decode)
            tokens = sample(logits, step.decode)
            metrics.DECODE_TOKENS_PER_SECOND.set(len(tokens) / max(time.perf_counter() - started, 1e-9))
            for seq, token in zip(step.decode, tokens, strict=True):
                self.blocks.register_computed(seq)
                self._append(seq, token)

    def _append(self, seq: Sequence, token: int) -> None:
        seq.token_ids.append(token)
        metrics.GENERATED_TOKENS.inc()
        p = seq.params
        reason = None
        if not p.ignore_eos and (token in self.tokenizer.stop_ids or token in p.stop_token_ids):
            reason = "stop"
        elif seq.num_generated >= p.max_tokens or len(seq) >= self.max_model_len:
            reason = "length"
        if reason == "stop":
            self._finish(seq, reason, token=None)  # the stop token itself is not text
        else:
            self._emit(seq, token, None)
            if reason:
                self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: str, token=None) -> None:
        if seq.status is Status.FINISHED:
            return
        self.scheduler.finish(seq)
        seq.finish_reason = reason
        self._emit(seq, token, reason)

    @staticmethod
    def _emit(seq: Sequence, token, reason) -> None:
        if seq.on_token is None:
            return
        try:
            seq.on_token(seq, token, reason)
        except Exception:
            log.exception("token callback failed for sequence %s", seq.seq_id)

    def _update_gauges(self) -> None:
        metrics.RUNNING.set(len(self.scheduler.running))
        metrics.WAITING.set(len(self.scheduler.waiting))
        if self.blocks.queries:
            metrics.PREFIX_CACHE_HIT_RATE.set(self.blocks.hits / self.blocks.queries)
        metrics.KV_CACHE_USAGE.set(1 - self.blocks.num_free / self.blocks.num_blocks)


def generate(
    engine: LLMEngine, prompt_ids: list[int], params: SamplingParams, timeout: float = 600
) -> list[int]:
    """Blocking helper for tests and benchmarks: the generated token ids of one request."""
    done = threading.Event()
    out: list[int] = []

    def on_token(seq, token, reason):
        if token is not None:
            out.append(token)
        if reason is not None:
            done.set()

    engine.submit(prompt_ids, params, on_token)
    if not done.wait(timeout):
        raise TimeoutError("generation did not finish")
    return out
