"""Error answers that always serialise: 422 with a bounded, JSON-safe echo of the input; 409 for reused keys.

Starlette parses request bodies with :func:`json.loads`, which accepts ``NaN``, ``Infinity``, ``1e400`` (→ ``inf``)
and lone surrogates (``"\\ud800"``). FastAPI's own 422 handler echoes the offending input, which then cannot be
written as JSON (a 500, and a reset keep-alive connection). Here every echoed value is made JSON-safe (non-finite
numbers become strings, unpaired surrogates escapes) and truncated.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from coact_verl.oracle.service.comparison_store import UnknownTicket, VoteConflict
from coact_verl.oracle.service.db import CandidateLimit, KeyConflict, RunNotFound

MAX_ECHO_CHARS = 200  # per echoed string
MAX_ECHO_ITEMS = 10  # per echoed list or object
MAX_ECHO_DEPTH = 3
MAX_ERRORS = 20  # validation errors listed per answer


def safe_text(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, unpaired surrogates written as ``\\udXXX`` escapes."""
    cut = text[:limit] + ("…" if len(text) > limit else "")
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: Any, depth: int = 0) -> Any:
    """A bounded JSON-safe copy of a parsed request value (for echoing it in an error)."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)[:MAX_ECHO_CHARS]
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes):
        return safe_text(value.decode("utf-8", "replace"))
    if depth >= MAX_ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ECHO_ITEMS]
        return {safe_text(str(k), 64): json_safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in list(value)[:MAX_ECHO_ITEMS]]
    return safe_text(str(value))


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """The first ``MAX_ERRORS`` validation errors with JSON-safe, truncated fields (``ctx`` and ``url`` left out)."""
    out = []
    for error in list(errors)[:MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": safe_text(str(error.get("type", "")), 64),
            "loc": [json_safe(p) if isinstance(p, int) else safe_text(str(p), 64) for p in error.get("loc", ())][:8],
            "msg": safe_text(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = json_safe(error["input"])
        out.append(item)
    return out


def install_error_handlers(app: FastAPI) -> None:
    """422 for invalid requests and over-cap candidate lists, 409 for a key reused with another body, 404 for a
    ticket not leased or an unknown run."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    for exc_type, status, counter in _REFUSALS:
        app.add_exception_handler(exc_type, _refusal(status, counter))


#: ``(exception, HTTP status, /metrics counter or None)`` of each refusal whose message is the whole answer.
_REFUSALS = (
    (KeyConflict, 409, "key_conflicts_total"),
    (VoteConflict, 409, None),
    (RunNotFound, 404, "unknown_run_total"),
    (CandidateLimit, 422, "over_candidate_cap_total"),
    (UnknownTicket, 404, None),
)


def _refusal(status: int, counter: str | None) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """An exception handler answering ``status`` with the exception's message (counted in ``counter``)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if counter is not None:
            _count(request, counter)
        return JSONResponse({"detail": safe_text(str(exc))}, status_code=status)

    return handler


def _count(request: Request, name: str) -> None:
    """Count a refused request in the worker's ``/metrics``."""
    core = getattr(request.app.state, "core", None)
    if core is not None:
        core.metrics[name] += 1


__all__ = ["install_error_handlers", "json_safe", "safe_text", "validation_errors"]
