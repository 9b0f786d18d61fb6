"""The Triton fused MoE kernel against the reference, run by Triton's interpreter on CPU tensors.

TRITON_INTERPRET is read when a `@triton.jit` function is defined, so the kernel runs in a subprocess that
sets it before importing anything. The interpreter's bf16 `tl.dot` is broken, hence fp32 and fp16 here.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from inference.kernels.triton_moe import moe_align

REPO = Path(__file__).resolve().parents[2]

# fp32: the interpreter's dot is exact up to summation order; fp16: fp16 activations and intermediate.
REL_ERR = {"float32": 1e-5, "float16": 5e-3}

CASES = textwrap.dedent(
    """
    import json, os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    from inference.kernels import Int4Experts, fused_moe_w4a16, select_experts_softmax

    def layer(experts, hidden, inter, group_size, seed):
        g = torch.Generator().manual_seed(seed)
        w13 = Int4Experts.quantize(torch.randn(experts, 2 * inter, hidden, generator=g) * 0.1, group_size)
        w2 = Int4Experts.quantize(torch.randn(experts, hidden, inter, generator=g) * 0.1, group_size)
        return w13, w2

    def softmax_route(m, experts, k, seed):
        return select_experts_softmax(torch.randn(m, experts, generator=torch.Generator().manual_seed(seed)), k)

    cases = {
        "one token": (layer(4, 64, 32, 32, 0), softmax_route(1, 4, 2, 1)),
        "odd token count, idle experts": (layer(8, 64, 64, 32, 2), softmax_route(7, 8, 2, 3)),
        "all tokens to one expert": (layer(4, 64, 32, 32, 4), (torch.ones(5, 1), torch.full((5, 1), 2))),
        "intermediate 160, several K steps": (layer(2, 128, 160, 32, 5), softmax_route(3, 2, 1, 6)),
        "group size 128": (layer(2, 256, 128, 128, 10), softmax_route(4, 2, 2, 11)),
        "group size 64": (layer(3, 128, 64, 64, 7), softmax_route(6, 3, 2, 8)),
    }
    errors = {}
    for name, ((w13, w2), (weights, ids)) in cases.items():
        for dtype in (torch.float32, torch.float16):
            hidden = torch.randn(ids.shape[0], w13.in_features, generator=torch.Generator().manual_seed(9))
            hidden = hidden.to(dtype)
            ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference").float()
            out = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="triton")
            assert out.dtype == dtype and out.shape == ref.shape
            errors[f"{name} {str(dtype).removeprefix('torch.')}"] = ((out.float() - ref).norm() / ref.norm()).item()
    print(json.dumps(errors))
    """
)


@pytest.fixture(scope="module")
def interpreter_errors():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CASES], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_triton_kernel_matches_reference_under_the_interpreter(interpreter_errors):
    assert len(interpreter_errors) == 12
    for case, err in interpreter_errors.items():
        assert err < REL_ERR[case.rsplit(" ", 1)[1]], (case, err)


def test_moe_align_pads_each_experts_rows_to_the_block_and_keeps_every_assignment_once():
    topk_ids = torch.tensor([[3, 0], [3, 1], [3, 0], [3, 1], [3, 0]])  # expert 2 idle
    sorted_ids, expert_ids = moe_align(topk_ids, num_experts=4, block_m=4)
    # 3 tokens, 2 tokens, none, 5 tokens -> 1, 1, 0, 2 blocks; the rest of the static size is skipped (-1)
    assert expert_ids.tolist() == [0, 1, 3, 3, -1, -1]
    assert sorted_ids.numel() == 4 * 6  # M*k + E*(block_m - 1) = 22, rounded up to the block
    padding = topk_ids.numel()
    assert sorted(i for i in sorted_ids.tolist() if i != padding) == list(range(padding))
    for block, expert in enumerate(expert_ids.tolist()):
        rows = [i for i in sorted_ids[block * 4 : block * 4 + 4].tolist() if i != padding]
        if expert < 0:
            assert rows == []
        else:
            assert rows and all(topk_ids.reshape(-1)[i] == expert for i in rows)
