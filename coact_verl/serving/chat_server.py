"""An OpenAI-compatible chat-completions server (FastAPI) around a :class:`ChatEngine`.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (both behind the optional bearer key), ``GET /health``
and ``GET /metrics`` (Prometheus text). Generation runs in a worker thread, one request at a time; a client that
disconnects stops its generation.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from coact_verl.serving.engine import ChatEngine, Generation, GenerationCancelled, GenerationTimeout, PromptTooLong

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
MAX_STOP = 4


@dataclass
class ServerConfig:
    """Limits of the server.

    Args:
        api_key: bearer key required on ``/v1`` routes (``None``: open).
        max_tokens_limit: largest ``max_tokens`` accepted.
        default_max_tokens: ``max_tokens`` of a request that names none.
        request_timeout_s: bound of one request (waiting for the model and generating), in seconds.
        max_pending: requests queued or running at once before answering 503.
    """

    api_key: str | None = None
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    request_timeout_s: float = 120.0
    max_pending: int = 16


@dataclass
class Metrics:
    """Counters since start: chat requests by HTTP status, tokens, generation seconds, requests in flight."""

    codes: Counter[int] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_s: float = 0.0
    inflight: int = 0

    def render(self) -> str:
        """Prometheus text exposition."""
        lines = ["# TYPE coact_chat_requests_total counter"]
        lines += [f'coact_chat_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.codes.items())]
        lines += [
            f"coact_chat_prompt_tokens_total {self.prompt_tokens}",
            f"coact_chat_completion_tokens_total {self.completion_tokens}",
            f"coact_chat_generation_seconds_total {self.generation_s:.3f}",
            f"coact_chat_inflight {self.inflight}",
        ]
        return "\n".join(lines) + "\n"


class ApiError(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}
        return JSONResponse(body, status_code=self.status)


class TextPart(BaseModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def as_dict(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ResponseFormat(BaseModel):
    """``json_object`` starts the reply at ``{`` and ends it where that object closes (not a grammar)."""

    type: Literal["text", "json_object"]


class ChatRequest(BaseModel):
    """The supported part of OpenAI's chat-completions request; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: ResponseFormat | None = None


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise ApiError(400, f"stop must be up to {MAX_STOP} non-empty strings", param="stop")
    return stops


def _max_tokens(body: ChatRequest, config: ServerConfig) -> int:
    asked = body.max_completion_tokens or body.max_tokens or config.default_max_tokens
    if asked > config.max_tokens_limit:
        raise ApiError(400, f"max_tokens must be at most {config.max_tokens_limit}, got {asked}", param="max_tokens")
    return asked


def _check(body: ChatRequest, engine: ChatEngine) -> None:
    if body.model is not None and body.model != engine.name:
        raise ApiError(404, f"model {body.model!r} is not served here (serving {engine.name!r})", "not_found", "model")
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    if body.stream:
        raise ApiError(400, "streaming is not supported", param="stream")


async def _watched(fn: functools.partial[Generation], request: Request, cancel: threading.Event) -> Generation:
    """Run ``fn`` in a worker thread; set ``cancel`` if the client disconnects meanwhile."""
    task = asyncio.ensure_future(asyncio.to_thread(fn))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            return task.result()
        if not cancel.is_set() and await request.is_disconnected():
            cancel.set()


def create_app(engine: ChatEngine, config: ServerConfig | None = None) -> FastAPI:
    """The server app for ``engine``."""
    config = config or ServerConfig()
    metrics = Metrics()
    started = int(time.time())
    app = FastAPI(title="coact-verl chat server", description=f"OpenAI-compatible chat completions: {engine.name}")
    app.state.metrics = metrics

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise ApiError(401, "missing or invalid API key", param="authorization")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if request.url.path == CHAT_PATH:
            metrics.codes[exc.status] += 1
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = [".".join(str(p) for p in e["loc"][1:] if e["type"] != "json_invalid") or "body" for e in errors]
        message = "; ".join(f"{w}: {e['msg']}" for w, e in zip(where, errors, strict=True))
        return await api_error(request, ApiError(400, f"invalid request: {message}", param=where[0] if where else None))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": engine.name}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> str:
        return metrics.render()

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        card = {"id": engine.name, "object": "model", "created": started, "owned_by": "coact-verl"}
        return {"object": "list", "data": [{**card, "max_model_len": engine.max_context}]}

    @app.post(CHAT_PATH, dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
        _check(body, engine)
        max_tokens, stop = _max_tokens(body, config), _stops(body.stop)
        if metrics.inflight >= config.max_pending:
            raise ApiError(503, f"server busy ({metrics.inflight} requests in flight)", "server_busy")
        deadline = time.monotonic() + config.request_timeout_s
        try:
            ids = engine.encode([m.as_dict() for m in body.messages])
        except Exception as exc:  # noqa: BLE001 - the chat template rejects some conversations
            raise ApiError(400, f"chat template failed: {exc}", param="messages") from exc
        cancel = threading.Event()
        json_object = body.response_format is not None and body.response_format.type == "json_object"
        call = functools.partial(
            engine.complete,
            ids,
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
            json_object=json_object,
            deadline=deadline,
            cancel=cancel,
        )
        metrics.inflight += 1
        try:
            gen = await _watched(call, request, cancel)
        except PromptTooLong as exc:
            raise ApiError(400, str(exc), param="max_tokens") from exc
        except GenerationTimeout as exc:
            raise ApiError(504, f"request exceeded {config.request_timeout_s:g} s: {exc}", "timeout") from exc
        except GenerationCancelled as exc:
            raise ApiError(499, str(exc), "cancelled") from exc
        finally:
            metrics.inflight -= 1
        metrics.codes[200] += 1
        metrics.prompt_tokens += gen.prompt_tokens
        metrics.completion_tokens += gen.completion_tokens
        metrics.generation_s += gen.seconds
        log.info(
            "chat: %d+%d tokens in %.2f s (%s)",
            gen.prompt_tokens,
            gen.completion_tokens,
            gen.seconds,
            gen.finish_reason,
        )
        usage = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
        choice = {"role": "assistant", "content": gen.text}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": engine.name,
            "choices": [{"index": 0, "message": choice, "finish_reason": gen.finish_reason, "logprobs": None}],
            "usage": {**usage, "total_tokens": gen.prompt_tokens + gen.completion_tokens},
        }

    return app
