"""The OpenAI-compatible HTTP API over the CPU engine: /v1/chat/completions (stream and not),
/v1/models, /health, /metrics."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.engine.llm_engine import LLMEngine
from inference.server.chat_completions import ChatCompletions, error_response
from inference.server.chat_templates import IM_MIDDLE, KIMI_K2_TEMPLATE
from inference.server.protocol import now

log = logging.getLogger(__name__)

# A template for models that ship none: plain ChatML.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_template(tokenizer) -> str:
    """For a checkpoint without a chat template: Kimi K2's when its vocabulary has Kimi's role tokens."""
    if tokenizer.tokenizer.token_to_id(IM_MIDDLE) is not None:
        return KIMI_K2_TEMPLATE
    return CHATML_TEMPLATE


def create_app(engine: LLMEngine, model_name: str) -> FastAPI:
    app = FastAPI(title="kimiweb inference", docs_url=None, redoc_url=None)
    app.state.engine = engine
    names = {model_name, "default"}
    tokenizer = engine.tokenizer
    template = tokenizer.chat_template or default_template(tokenizer)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON")
        loc = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        param = (first.get("ctx") or {}).get("param") or loc or None
        message = f"{loc or 'body'}: {first.get('msg', 'invalid request').removeprefix('Value error, ')}"
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(
            exc.status_code,
            str(exc.detail),
            type_="not_found_error" if exc.status_code == 404 else "invalid_request_error",
        )

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        created = now()
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "kimiweb",
                    "max_model_len": engine.max_model_len,
                }
                for name in (model_name, "default")
            ],
        }

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/v1/chat/completions",
        ChatCompletions(engine, model_name, names, template).handle,
        methods=["POST"],
        response_model=None,
    )

    return app
