"""Continuous batching: which sequences run in the next step. New requests join as soon as cache
blocks allow; each step prefills one chunk of one sequence and decodes every other running one;
when memory runs out mid-decode the newest sequence is preempted and recomputed later."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from inference.engine.block_manager import BlockManager
from inference.engine.sequence import Sequence, Status


@dataclass
class Step:
    prefill: Sequence | None
    prefill_end: int  # compute tokens [prefill.num_computed, prefill_end)
    decode: list[Sequence]


class Scheduler:
    def __init__(self, blocks: BlockManager, max_running: int = 32, prefill_chunk: int = 512):
        self.blocks = blocks
        self.max_running = max_running
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Step:
        # Admit in arrival order; keep a block per running sequence in reserve for its next token.
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq, reserve=len(self.running)):
                break
            self.blocks.allocate(seq)
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
        prefill = next((s for s in self.running if len(s) - s.num_computed > 1), None)
        prefill_end = 0
        if prefill is not None:
            prefill_end = min(len(prefill), prefill.num_computed + self.prefill_chunk)
        decode = []
        for seq in list(self.running):
            if seq is prefill or seq.status is not Status.RUNNING or len(seq) - seq.num_computed != 1:
                continue  # still waiting for its prompt to be prefilled
            while not self.blocks.can_append(seq):
                victim = self._newest_other_than(prefill)
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                self.blocks.append_slot(seq)
                decode.append(seq)
        return Step(prefill, prefill_end, decode)

    def _newest_other_than(self, keep: Sequence | None) -> Sequence:
        for seq in reversed(self.running):
            if seq is not keep:
                return seq
        return self.running[-1]

    def preempt(self, seq: Sequence) -> None:
        self.blocks.free_sequence(seq)
        self.running.remove(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.free_sequence(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
