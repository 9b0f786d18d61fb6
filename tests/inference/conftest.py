"""The live server the API tests drive: the scripted Kimi-format model (inference_servers) behind our
OpenAI-compatible server, and the official `openai` client. A module may define its own `base_url`."""

import openai
import pytest
from inference_servers import serve, write_scripted_kimi_model


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    model = write_scripted_kimi_model(tmp_path_factory.mktemp("models") / "scripted-kimi")
    with serve(model, "--dtype", "float32", "--kv-cache-tokens", "4096") as url:
        yield url


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
