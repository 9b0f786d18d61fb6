"""Runs the model for a scheduled step: owns the KV cache tensors and turns sequences' block tables
into the slot indices and masks the attention layers read."""

from __future__ import annotations

import torch

from inference.engine.sequence import Sequence
from inference.models.layers import ForwardBatch


class ModelRunner:
    def __init__(self, model: torch.nn.Module, num_blocks: int, block_size: int, dtype: torch.dtype):
        self.model = model
        self.block_size = block_size
        slots = num_blocks * block_size
        self.kv = [
            [torch.zeros(slots, *shape, dtype=dtype) for shape in layer] for layer in model.kv_cache_shapes()
        ]
        self._offsets = torch.arange(block_size)
        # A quantized native model runs a whole forward pass per call (rows of one token each).
        self.native = getattr(model, "native", False)
        self.profile = False  # native models: accumulate per-phase times (model.handle.phase_times())

    def _slots(self, seq: Sequence, n: int) -> torch.Tensor:
        table = torch.tensor(seq.block_table, dtype=torch.long)
        return (table[:, None] * self.block_size + self._offsets).reshape(-1)[:n]

    def prefill(self, seq: Sequence, end: int, all_logits: bool = False) -> torch.Tensor:
        """Compute tokens [seq.num_computed, end) of one sequence; logits [1, V] of the last one (all of
        them, [end - start, V], with all_logits)."""
        start = seq.num_computed
        if self.native:
            n = end - start
            nb = -(-end // self.block_size)
            logits = self.model.forward_rows(
                torch.tensor(seq.token_ids[start:end]),
                torch.arange(start, end),
                self._slots(seq, end)[start:end].contiguous(),
                torch.zeros(n, dtype=torch.long),
                torch.tensor([seq.block_table[:nb]]),
                self.block_size,
                self.kv,
                torch.arange(n) if all_logits else torch.tensor([n - 1]),
                self.profile,
            )
            seq.num_computed = end
            return logits
        ids = torch.tensor([seq.token_ids[start:end]])
        positions = torch.arange(start, end)[None]
        slots = self._slots(seq, end)
        if start == 0:
            read, mask = None, None
        else:
            nb = -(-end // self.block_size)
            read = torch.tensor([seq.block_table[:nb]])  # [1, NB]
            span = torch.arange(nb * self.block_size)
            mask = (span[None, :] <= positions[0, :, None])[None, None]  # [1, 1, T, S]
        batch = ForwardBatch(positions, slots[start:end][None], read, mask, self.kv, self.block_size)
        logits = self.model(ids, batch, None if all_logits else torch.tensor([end - start - 1]))
        seq.num_computed = end
        return logits

    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """One token for each sequence (its last, not yet computed one); logits [B, V]."""
        bs = self.block_size
        lengths = [len(s) for s in seqs]
        nb = -(-max(lengths) // bs)
        if self.native:
            b = len(seqs)
            logits = self.model.forward_rows(
                torch.tensor([s.token_ids[-1] for s in seqs]),
                torch.tensor([n - 1 for n in lengths]),
                torch.tensor(
                    [
                        s.block_table[(n - 1) // bs] * bs + (n - 1) % bs
                        for s, n in zip(seqs, lengths, strict=True)
                    ]
                ),
                torch.arange(b),
                torch.tensor([s.block_table[:nb] + [0] * (nb - len(s.block_table[:nb])) for s in seqs]),
                bs,
                self.kv,
                torch.arange(b),
                self.profile,
            )
            for seq in seqs:
                seq.num_computed = len(seq)
            return logits
        ids = torch.tensor([[s.token_ids[-1]] for s in seqs])
        positions = torch.tensor([[n - 1] for n in lengths])
        read = torch.tensor(
            [s.block_table[:nb] + [0] * (nb - len(s.block_table[:nb])) for s in seqs]
        )  # [B, NB]
        lens = torch.tensor(lengths)
        mask = (torch.arange(nb * bs)[None, :] < lens[:, None])[:, None, None, :]  # [B, 1, 1, S]
        write = torch.tensor(
            [[s.block_table[(n - 1) // bs] * bs + (n - 1) % bs] for s, n in zip(seqs, lengths, strict=True)]
        )
        batch = ForwardBatch(positions, write, read, mask, self.kv, bs)
        logits = self.model(ids, batch, torch.zeros(len(seqs), dtype=torch.long))
        for seq in seqs:
            seq.num_computed = len(seq)
        return logits
