"""The OpenAI-compatible API, driven by the official `openai` client against a live server process.

The model is a real checkpoint on disk in Kimi format whose greedy output is scripted (see
inference_servers.write_scripted_kimi_model): thinking on → reasoning, then a web_search tool call;
thinking off → a direct answer."""

import json

import httpx
import openai
import pytest
from inference_servers import write_scripted_kimi_model, write_tiny_random_llama

from inference.engine.tokenizer import EngineTokenizer
from inference.server.app import CHATML_TEMPLATE, default_template
from inference.server.chat_templates import KIMI_K2_TEMPLATE

USER = [{"role": "user", "content": "What is Kimi K2?"}]


def test_models_lists_the_served_name_and_the_default_alias(client):
    assert [m.id for m in client.models.list().data] == ["scripted-kimi", "default"]


def test_health_reports_ok(base_url):
    body = httpx.get(base_url.removesuffix("/v1") + "/health").json()
    assert body["status"] == "ok" and body["running"] == 0


def test_stream_sends_reasoning_before_tool_call_deltas_and_usage_last(client):
    stream = client.chat.completions.create(
        model="default",
        messages=USER,
        tools=[{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}],
        stream=True,
        temperature=0,
        stream_options={"include_usage": True},
        extra_body={"chat_template_kwargs": {"thinking": True}},
    )
    kinds, reasoning, content, calls, finish, usage = [], "", "", [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            reasoning += delta.reasoning_content
            kinds.append("reasoning")
        if delta.content:
            content += delta.content
            kinds.append("content")
        for tc in delta.tool_calls or []:
            calls.append(tc)
            kinds.append("tool")
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning == "The user wants facts. I will search."
    assert content == ""
    assert kinds.index("tool") > max(i for i, k in enumerate(kinds) if k == "reasoning")
    first = calls[0]
    assert (first.index, first.id, first.function.name, first.function.arguments) == (
        0,
        "functions.web_search:0",
        "web_search",
        "",
    )
    assert all(tc.id is None and tc.index == 0 for tc in calls[1:])
    assert json.loads("".join(tc.function.arguments for tc in calls[1:])) == {"query": "kimi k2"}
    assert finish == "tool_calls"
    assert usage.completion_tokens == 9 and usage.prompt_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_non_streaming_tool_call_message(client):
    reply = client.chat.completions.create(model="scripted-kimi", messages=USER, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning_content == "The user wants facts. I will search."
    (tool_call,) = choice.message.tool_calls
    assert tool_call.id == "functions.web_search:0"
    assert tool_call.function.name == "web_search"
    assert json.loads(tool_call.function.arguments) == {"query": "kimi k2"}
    assert reply.usage.completion_tokens == 9


def test_thinking_off_answers_directly_without_reasoning(client):
    stream = client.chat.completions.create(
        model="default",
        messages=USER,
        stream=True,
        temperature=0,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the scripted model."
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_tool_round_trip_conversation_renders_and_runs(client):
    messages = USER + [
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I will search.",
            "tool_calls": [
                {
                    "id": "functions.web_search:0",
                    "type": "function",
                    "function": {"name": "web_search", "arguments": '{"query": "kimi k2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "functions.web_search:0", "content": "Kimi K2 is a model."},
    ]
    reply = client.chat.completions.create(
        model="default",
        messages=messages,
        temperature=0,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    assert reply.choices[0].message.content == "Hello from the scripted model."


def test_max_tokens_cuts_with_finish_reason_length(client):
    reply = client.chat.completions.create(model="default", messages=USER, temperature=0, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 2


def test_stop_string_ends_the_answer_before_it(client):
    reply = client.chat.completions.create(
        model="default",
        messages=USER,
        temperature=0,
        stop=[" from"],
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    assert reply.choices[0].message.content == "Hello"
    assert reply.choices[0].finish_reason == "stop"


def test_unknown_model_is_an_openai_style_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=USER)
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    "params",
    [{"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}, {"n": 2}, {"messages": []}],
    ids=["temperature", "top_p", "max_tokens", "n", "no messages"],
)
def test_invalid_parameters_are_400_with_a_message(client, params):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**{"model": "default", "messages": USER, **params})
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["message"]


def test_a_prompt_longer_than_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x" * 5000}])
    assert err.value.body["code"] == "context_length_exceeded"


def test_malformed_json_body_is_400(base_url):
    response = httpx.post(
        base_url + "/chat/completions",
        content=b'{"model": "default", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_metrics_exposes_engine_gauges(base_url):
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    for name in (
        "kimiweb_time_to_first_token_seconds",
        "kimiweb_running_requests",
        "kimiweb_waiting_requests",
        "kimiweb_prefix_cache_hit_rate",
        "kimiweb_generated_tokens_total",
    ):
        assert name in text


def test_a_max_tokens_beyond_the_context_is_clamped_not_refused(client):
    reply = client.chat.completions.create(
        model="default",
        messages=USER,
        max_tokens=1_000_000,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    assert reply.choices[0].message.content == "Hello from the scripted model."


def test_a_kimi_vocabulary_without_a_template_gets_the_kimi_k2_template(tmp_path):
    kimi = write_scripted_kimi_model(tmp_path / "kimi")
    assert default_template(EngineTokenizer.from_dir(kimi)) == KIMI_K2_TEMPLATE
    assert (
        default_template(EngineTokenizer.from_dir(write_tiny_random_llama(tmp_path / "tiny")))
        == CHATML_TEMPLATE
    )


def raw_post(base_url, body: bytes) -> httpx.Response:
    return httpx.post(
        base_url + "/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


SURROGATE = '"a\\ud800b"'  # JSON text for a string holding a lone surrogate


@pytest.mark.parametrize(
    "body",
    [
        '{"model": "default", "messages": [{"role": "user", "content": SUR}]}'.replace("SUR", SURROGATE),
        '{"model": "default", "messages": [{"role": "user", "content": [{"type": "text", "text": SUR}]}]}'.replace(
            "SUR", SURROGATE
        ),
        '{"model": "default", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",'
        ' "function": {"name": "f", "description": SUR}}]}'.replace("SUR", SURROGATE),
        '{"model": SUR, "messages": [{"role": "user", "content": "hi"}]}'.replace("SUR", SURROGATE),
        '{"model": "default", "messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551616}',
        '{"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    ],
    ids=["message", "content part", "tool description", "model name", "seed beyond 64 bits", "NaN"],
)
def test_invalid_text_and_out_of_range_numbers_are_openai_400s(base_url, body):
    assert_openai_error(raw_post(base_url, body.encode()), 400)


def test_an_unknown_model_with_odd_characters_is_a_404(base_url):
    body = json.dumps({"model": "nope\u2028\u00e9", "messages": USER}).encode()
    assert assert_openai_error(raw_post(base_url, body), 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "tools",
    [
        [{"type": "function"}],
        [{"type": "function", "function": {"name": 3}}],
        [{"type": "function", "function": {"name": "f", "parameters": "str"}}],
        ["web_search"],
    ],
    ids=["no function", "non-string name", "parameters not an object", "not an object"],
)
def test_invalid_tool_schemas_are_400(client, tools):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=USER, tools=tools)
    assert err.value.body["type"] == "invalid_request_error"


def test_a_tool_choice_naming_a_tool_not_in_tools_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="default",
            messages=USER,
            tools=[
                {"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}
            ],
            tool_choice={"type": "function", "function": {"name": "browse"}},
        )
    assert err.value.body["param"] == "tool_choice"
    assert "browse" in err.value.body["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"response_format": {"type": "json_object"}},
        {"logit_bias": {"42": 5}},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"parallel_tool_calls": False},
    ],
    ids=lambda p: next(iter(p)),
)
def test_parameters_the_server_does_not_implement_are_400s_that_name_them(client, params):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=USER, **params)
    (name,) = params
    assert err.value.body["param"] == name and name in err.value.body["message"]


def test_image_parts_are_400(client):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]
        )
    assert "image_url" in err.value.body["message"]


def test_parameters_at_their_neutral_values_are_accepted(client):
    reply = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is Kimi K2?"}]}],
        temperature=0,
        presence_penalty=0,
        frequency_penalty=0,
        logprobs=False,
        response_format={"type": "text"},
        seed=2**64 - 1,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    assert reply.choices[0].message.content == "Hello from the scripted model."


def test_wrong_methods_and_paths_are_openai_errors(base_url):
    assert_openai_error(httpx.get(base_url + "/chat/completions"), 405)
    assert_openai_error(httpx.get(base_url + "/nothing-here"), 404)


TWO_TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("web_search", "browse")
]


@pytest.mark.parametrize("thinking", [False, True], ids=["thinking off", "thinking on"])
def test_tool_choice_required_forces_a_call_when_the_model_would_answer(client, thinking):
    reply = client.chat.completions.create(
        model="default",
        messages=USER,
        tools=TWO_TOOLS,
        tool_choice="required",
        temperature=0,
        extra_body={"chat_template_kwargs": {"thinking": thinking}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "web_search"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("thinking", [False, True], ids=["thinking off", "thinking on"])
def test_a_named_tool_choice_forces_that_tool(client, thinking, stream):
    request = dict(
        model="default",
        messages=USER,
        tools=TWO_TOOLS,
        tool_choice={"type": "function", "function": {"name": "browse"}},
        temperature=0,
        extra_body={"chat_template_kwargs": {"thinking": thinking}},
    )
    if stream:
        names = [
            tc.function.name
            for chunk in client.chat.completions.create(stream=True, **request)
            if chunk.choices
            for tc in chunk.choices[0].delta.tool_calls or []
            if tc.id
        ]
        assert names == ["browse"]
        return
    choice = client.chat.completions.create(**request).choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert (tool_call.id, tool_call.function.name) == ("functions.browse:0", "browse")
    assert choice.message.content is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_logprobs_come_back_per_token_with_the_top_alternatives(client, stream):
    request = dict(
        model="default",
        messages=USER,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    if stream:
        entries = [
            entry
            for chunk in client.chat.completions.create(stream=True, **request)
            if chunk.choices and chunk.choices[0].logprobs
            for entry in chunk.choices[0].logprobs.content
        ]
    else:
        entries = client.chat.completions.create(**request).choices[0].logprobs.content
    assert "".join(e.token for e in entries) == "Hello from the scripted model."
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token  # greedy picks the most likely token
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert bytes(e.bytes).decode() == e.token
