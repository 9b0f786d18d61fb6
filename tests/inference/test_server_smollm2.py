"""SmolLM2-135M-Instruct from its bundled GGUF served live: real answers, continuous batching of
concurrent streams, abort on disconnect, prefix cache hits, seeded sampling. The model is named
`smollm2`, not `default`, which resolves to whatever var/ holds (kimi-mini once it is built)."""

import concurrent.futures
import time

import httpx
import openai
import pytest
from inference_servers import serve

pytestmark = pytest.mark.slow  # loads the 135M model (about 30 s in all on two cores)

QUESTIONS = [
    "What is the capital of France?",
    "What is 2 + 2?",
    "Name a primary color.",
    "Who wrote Hamlet?",
    "What is water made of?",
    "Say hello in Spanish.",
    "What is the largest planet?",
    "How many legs does a spider have?",
]


@pytest.fixture(scope="module")
def base_url():
    # fp32 so that a row's greedy tokens do not depend on which other rows share its batch.
    with serve(
        "smollm2", "--served-model-name", "smollm2", "--dtype", "float32", "--kv-cache-tokens", "16384"
    ) as url:
        yield url


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def ask(client, question, **kw):
    params = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 16,
    }
    return client.chat.completions.create(**(params | kw))


def stream_text(client, question, **kw):
    chunks = ask(client, question, stream=True, **kw)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def health(base_url):
    return httpx.get(base_url.removesuffix("/v1") + "/health").json()


def test_the_default_model_answers_streaming_and_not(client):
    reply = ask(client, QUESTIONS[0], max_tokens=24)
    assert "Paris" in reply.choices[0].message.content
    assert reply.model == "smollm2"
    assert stream_text(client, QUESTIONS[0], max_tokens=24) == reply.choices[0].message.content


def test_eight_concurrent_streams_match_their_solo_answers(client, base_url):
    solo = {q: ask(client, q).choices[0].message.content for q in QUESTIONS}
    assert len(set(solo.values())) == len(QUESTIONS)
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = dict(zip(QUESTIONS, pool.map(lambda q: stream_text(client, q), QUESTIONS), strict=True))
    assert together == solo
    assert health(base_url)["running"] == 0


def test_closing_the_stream_aborts_generation_and_frees_the_slot(client, base_url):
    stream = ask(
        client, "Tell me a very long story.", stream=True, max_tokens=2000, extra_body={"ignore_eos": True}
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received >= 3:
            break
    assert health(base_url)["running"] == 1
    stream.close()
    deadline = time.monotonic() + 10
    while health(base_url)["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    state = health(base_url)
    assert state["running"] == 0 and state["waiting"] == 0


def test_a_resent_conversation_hits_the_prefix_cache(client):
    system = "You are a careful assistant. " * 40
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Hi!"}]
    reply = client.chat.completions.create(model="smollm2", messages=first, temperature=0, max_tokens=8)
    follow_up = first + [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    again = client.chat.completions.create(model="smollm2", messages=follow_up, temperature=0, max_tokens=8)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached >= reply.usage.prompt_tokens - 16  # all of the first prompt but a partial block
    assert cached < again.usage.prompt_tokens


def test_seeded_sampling_is_reproducible(client):
    def sample(seed):
        return (
            ask(client, "Write a word.", temperature=1.0, top_p=0.95, seed=seed, max_tokens=12)
            .choices[0]
            .message.content
        )

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1
