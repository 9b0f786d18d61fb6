"""The KV memory bound and the prefix cache: a fixed pool of fixed-size cache blocks, and a map from
the hash of each full block's tokens (chained with everything before it) to the block holding them.

A block freed by a finished request keeps its contents and hash until it is reused, so the next
request that starts with the same tokens (an agent resending its growing conversation) attaches
those blocks instead of recomputing them. Eviction takes the least recently freed block first."""

from __future__ import annotations

from collections import OrderedDict

from inference.engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_cache: bool = True):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.prefix_cache = prefix_cache
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # hash → block id
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.queries = 0  # prompt tokens looked up
        self.hits = 0  # prompt tokens found

    @property
    def num_free(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _hashes(self, token_ids: list[int], num_blocks: int) -> list[int]:
        hashes, parent = [], 0
        for i in range(num_blocks):
            parent = hash((parent, tuple(token_ids[i * self.block_size : (i + 1) * self.block_size])))
            hashes.append(parent)
        return hashes

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        """Whether `seq` fits now, keeping `reserve` blocks free. Cached blocks it would reuse cost
        nothing, except that idle ones (in the free list) stop being free."""
        hits = self._cache_hits(seq)
        idle_hits = sum(1 for block in hits if self.ref_counts[block] == 0)
        fresh = self.blocks_needed(len(seq) + 1) - len(hits)
        return fresh + idle_hits <= self.num_free - reserve

    def _cache_hits(self, seq: Sequence) -> list[int]:
        # Keep at least one token to compute: the forward pass needs it to produce logits.
        full = (len(seq) - 1) // self.block_size if self.prefix_cache else 0
        hits = []
        for h in self._hashes(seq.token_ids, full):
            block = self.cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate(self, seq: Sequence) -> None:
        """Give `seq` blocks for its current tokens, reusing cached prefix blocks."""
        if not self.can_allocate(seq):
            raise RuntimeError("allocate() without room; the scheduler checks can_allocate() first")
        full = (len(seq) - 1) // self.block_size if self.prefix_cache else 0
        table = []
        for h in self._hashes(seq.token_ids, full):
            block = self.cached.get(h)
            if block is None:
                break
            if self.ref_counts[block] == 0:
                del self.free[block]
            self.ref_counts[block] += 1
            table.append(block)
        seq.num_computed = len(table) * self.block_size
        seq.num_registered = len(table)
        self.queries += len(seq)
        self.hits += seq.num_computed
        seq.num_cached_prompt = seq.num_computed
        while len(table) < self.blocks_needed(len(seq) + 1):
            table.append(self._take_free())
        seq.block_table = table

    def _take_free(self) -> int:
        block, _ = self.free.popitem(last=False)
        old = self.block_hash[block]
        if old is not None and self.cached.get(old) == block:
            del self.cached[old]
        self.block_hash[block] = None
        self.ref_counts[block] = 1
        return block

    def can_append(self, seq: Sequence) -> bool:
        return len(seq.block_table) * self.block_size > len(seq) or self.num_free > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for the next token of a running sequence."""
        if len(seq.block_table) * self.block_size <= len(seq):
            seq.block_table.append(self._take_free())

    def register_computed(self, seq: Sequence) -> None:
        """Publish the full blocks whose keys/values are now computed, so later requests can share them."""
        full = seq.num_computed // self.block_size if self.prefix_cache else 0
        hashes = seq.block_hashes
        while len(hashes) < full:  # chained hashes, extended incrementally as the sequence grows
            i = len(hashes)
            parent = hashes[-1] if hashes else 0
            hashes.append(
                hash((parent, tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])))
            )
        for i in range(seq.num_registered, full):
            h, block = hashes[i], seq.block_table[i]
            if self.block_hash[block] is None and h not in self.cached:
                self.block_hash[block] = h
                self.cached[h] = block
        seq.num_registered = full

    def free_sequence(self, seq: Sequence) -> None:
        # Release from the tail so the prefix blocks are evicted last.
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                if self.block_hash[block] is None:
                    self.free[block] = None
                    self.free.move_to_end(block, last=False)  # uncached blocks are reused first
                else:
                    self.free[block] = None
        seq.block_table = []
        seq.num_computed = 0
        seq.num_registered = 0
