"""One request inside the engine: its tokens, sampling parameters, cache blocks and status."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

import torch


@dataclass
class ForcedTokens:
    """Tokens the sampler writes instead of the model's choice (constrained decoding of a required
    tool call): from the first token when `at_start`, else right after a token in `after` (the end of
    the reasoning); a stop token sampled before then is replaced by them, so the output always holds
    them. When the model picks `ids[0]` itself, the rest follow."""

    ids: list[int]
    after: frozenset[int] = frozenset()
    stop_ids: frozenset[int] = frozenset()
    at_start: bool = False


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    max_tokens: int = 512
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    forced: ForcedTokens | None = None
    logprobs: int | None = None  # report the chosen token's logprob and this many top alternatives


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_ids = itertools.count()


class Sequence:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, on_token=None):
        self.seq_id = next(_ids)
        self.prompt_ids = list(prompt_ids)
        self.token_ids = list(prompt_ids)  # prompt + generated
        self.params = params
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_computed = 0  # tokens whose keys/values are in the cache
        self.num_cached_prompt = 0  # prompt tokens served by the prefix cache
        self.block_hashes: list[int] = []  # chained hashes of the full blocks, for the prefix cache
        self.num_registered = 0  # leading blocks already published to the prefix cache
        self.aborted = False
        self.finish_reason: str | None = None
        self.on_token = on_token  # called from the engine thread: (seq, token_id | None, finished)
        self.forced_pos: int | None = 0 if params.forced and params.forced.at_start else None
        self.last_logprobs: tuple[float, list[tuple[int, float]]] | None = None  # of the newest token
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.token_ids)
