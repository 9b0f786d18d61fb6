"""The CPU engine on a tiny random Llama: continuous batching, the prefix cache, the KV memory bound
(queueing, preemption, 503), aborts, and sampling."""

import os
import threading
import time

import pytest
import torch
from inference_servers import write_tiny_random_llama

from inference.engine import openmp
from inference.engine.block_manager import BlockManager
from inference.engine.llm_engine import EngineFull, LLMEngine, PromptTooLong, generate
from inference.engine.loader import load_model
from inference.engine.sampler import sample
from inference.engine.sequence import SamplingParams, Sequence

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(write_tiny_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama"), torch.float32)


@pytest.fixture
def make_engine(loaded):
    engines = []

    def make(**kw):
        engine = LLMEngine(loaded, dtype=torch.float32, **({"kv_cache_tokens": 4096} | kw))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


def prompts(loaded, n):
    return [
        loaded.tokenizer.encode(f"<|im_start|>user\nquestion {i}: {'why ' * i}?<|im_end|>\n")
        for i in range(n)
    ]


def run_concurrently(engine, requests):
    results = [None] * len(requests)

    def one(i, ids, params):
        results[i] = generate(engine, ids, params)

    threads = [threading.Thread(target=one, args=(i, ids, p)) for i, (ids, p) in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_requests_are_batched_and_match_their_solo_outputs(make_engine, loaded):
    engine = make_engine()
    ps = prompts(loaded, 8)
    solo = [generate(engine, p, GREEDY) for p in ps]
    assert len({tuple(s) for s in solo}) == 8
    assert run_concurrently(engine, [(p, GREEDY) for p in ps]) == solo


def test_a_request_joins_a_running_batch_at_the_next_step(make_engine, loaded):
    engine = make_engine()
    long = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)
    first_done = threading.Event()
    seen_running = []
    engine.submit(prompts(loaded, 1)[0], long, lambda s, t, r: r and first_done.set())
    time.sleep(0.05)
    tokens = generate(engine, prompts(loaded, 2)[1], GREEDY)
    seen_running.append(engine.stats()["running"])
    assert len(tokens) == 24
    assert not first_done.is_set() and seen_running == [1]  # the short one finished while the long one ran
    first_done.wait(60)


def test_resending_a_conversation_reuses_its_cached_prefix(make_engine, loaded):
    engine = make_engine()
    history = loaded.tokenizer.encode("<|im_start|>system\n" + "You are helpful. " * 20 + "<|im_end|>\n")
    round1 = history + loaded.tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")
    out1 = generate(engine, round1, GREEDY)
    round2 = round1 + out1 + loaded.tokenizer.encode("<|im_start|>user\nmore<|im_end|>\n")
    seqs = []
    done = threading.Event()
    seqs.append(engine.submit(round2, GREEDY, lambda s, t, r: r and done.set()))
    done.wait(30)
    # Prompt and generated tokens of round 1 were cached, up to the last full block.
    assert seqs[0].num_cached_prompt == (len(round1) + len(out1) - 1) // 16 * 16
    # Same answer as without the cache.
    cold = make_engine()
    assert generate(cold, round2, GREEDY) == generate(engine, round2, GREEDY)


def test_when_the_kv_cache_is_full_requests_wait_or_are_preempted_and_all_finish_correctly(
    make_engine, loaded
):
    roomy = make_engine()
    ps = prompts(loaded, 6)
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    expected = [generate(roomy, p, params) for p in ps]
    tight = make_engine(kv_cache_tokens=160)  # 10 blocks: not enough for all six at once
    assert run_concurrently(tight, [(p, params) for p in ps]) == expected
    assert tight.blocks.num_free == tight.blocks.num_blocks


def test_a_full_queue_is_refused_and_a_too_long_prompt_rejected(make_engine, loaded):
    engine = make_engine(max_waiting=0)
    with pytest.raises(EngineFull):
        engine.submit([1, 2, 3], GREEDY, None)
    engine = make_engine(kv_cache_tokens=64)
    with pytest.raises(PromptTooLong):
        engine.submit(list(range(100)), GREEDY, None)


def test_abort_stops_generation_and_frees_the_cache(make_engine, loaded):
    engine = make_engine()
    events = []
    seq = engine.submit(
        prompts(loaded, 1)[0],
        SamplingParams(max_tokens=100000, ignore_eos=True),
        lambda s, t, r: events.append(r),
    )
    while len(events) < 5:
        time.sleep(0.01)
    engine.abort(seq)
    deadline = time.monotonic() + 10
    while events[-1] != "abort" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events[-1] == "abort"
    assert engine.stats()["running"] == 0
    assert engine.blocks.num_free == engine.blocks.num_blocks


def test_seeded_sampling_repeats_and_different_seeds_differ():
    logits = torch.randn(1, 500)

    def draw(seed):
        seq = Sequence([1], SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=seed))
        return [sample(logits, [seq])[0] for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_top_k_one_and_temperature_zero_are_greedy():
    logits = torch.randn(2, 100)
    seqs = [
        Sequence([1], SamplingParams(temperature=0)),
        Sequence([1], SamplingParams(temperature=1.0, top_k=1)),
    ]
    assert sample(logits, seqs) == logits.argmax(-1).tolist()


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    seq = Sequence([1], SamplingParams(temperature=1.0, top_p=0.8, seed=0))
    assert {sample(logits, [seq])[0] for _ in range(200)} == {0, 1}


def test_freed_blocks_keep_their_prefix_until_reused_least_recently_freed_first():
    blocks = BlockManager(num_blocks=6, block_size=4)
    a = Sequence(list(range(13)), SamplingParams())
    blocks.allocate(a)
    a.num_computed = 13
    blocks.register_computed(a)
    a_blocks = list(a.block_table)
    blocks.free_sequence(a)
    b = Sequence(list(range(12)) + [99], SamplingParams())
    blocks.allocate(b)
    assert b.num_computed == 12 and b.block_table[:3] == a_blocks[:3]
    assert blocks.hits == 12
    blocks.free_sequence(b)
    # New unrelated sequences take never-cached blocks first, then the oldest cached ones.
    c = Sequence([7] * 9, SamplingParams())
    blocks.allocate(c)
    assert not set(c.block_table) & set(a_blocks[:3])


def test_a_sequence_that_fills_the_whole_cache_ends_with_length(make_engine, loaded):
    engine = make_engine(kv_cache_tokens=64)
    reasons = []
    done = threading.Event()
    prompt = prompts(loaded, 1)[0][:20]
    engine.submit(
        prompt,
        SamplingParams(max_tokens=10_000, ignore_eos=True),
        lambda s, t, r: r and (reasons.append((r, len(s))), done.set()),
    )
    assert done.wait(30)
    assert reasons == [("length", engine.max_model_len)]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="torch runs one thread here")
def test_releasing_a_threads_openmp_pool_ends_its_workers():
    # The engine does this before its thread starts, so that the loading thread's parked workers do not push
    # libgomp past one thread per core (it then parks the engine thread's workers between parallel ops too).
    torch.ones(1 << 22).mul_(2)  # a parallel op on this thread: libgomp starts its workers
    workers = torch.get_num_threads() - 1
    before = _threads()
    assert openmp.release_this_threads_pool()
    deadline = time.monotonic() + 5
    while _threads() > before - workers and time.monotonic() < deadline:
        time.sleep(0.01)
    # At least this thread's workers ended (pools other threads left idle may be freed with them).
    assert _threads() <= before - workers
    torch.ones(1 << 22).mul_(2)  # parallel work on this thread afterwards still runs (with new workers)
