"""A lean ASGI path for the hot endpoint, ``POST /v1/queries`` from a trainer.

It serves only well-formed, authorised requests, with the same validation model, core call and response body as
the FastAPI route; anything else (missing or wrong token, invalid body, other paths) is replayed to the FastAPI
app unchanged, so errors and the OpenAPI description come from one place. It skips FastAPI's routing, dependency
resolution and double (de)serialisation, which cost about as much as the labelling itself.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pydantic import ValidationError

from coact_verl.oracle.service.auth import ADMIN, TRAINER
from coact_verl.oracle.service.db import CandidateLimit, KeyConflict, RunNotFound
from coact_verl.oracle.service.guard import replay_body
from coact_verl.oracle.service.run_store import RUN_HEADER, run_from_header
from coact_verl.oracle.service.schemas import QueryIn, QueryOut

_PATH = "/v1/queries"
_RUN_HEADER = RUN_HEADER.encode()
_HEADERS = [(b"content-type", b"application/json")]
MAX_FAST_BODY = 1 << 20  # larger bodies take the FastAPI route (and its body limit)


class QueriesFastPath:
    """ASGI wrapper of the oracle's FastAPI ``app`` (whose ``state`` holds the auth and the core once started)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != _PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more and size <= MAX_FAST_BODY:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not more:
            reply = await self._serve(scope, body)
            if reply is not None:
                headers = [*_HEADERS, (b"content-length", str(len(reply)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": reply})
                return
        await self.app(scope, replay_body(body, receive, more), send)

    async def _serve(self, scope: dict[str, Any], body: bytes) -> bytes | None:
        state = self.app.state
        auth = getattr(state, "auth", None)
        if auth is None:
            return None
        header, run = "", None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
            elif name == _RUN_HEADER:
                run = value
        scheme, _, token = header.partition(" ")
        principal = auth.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if principal is None or principal.role not in (TRAINER, ADMIN):
            return None
        try:
            query = QueryIn.model_validate_json(body)
        except ValidationError:
            return None
        try:
            out: QueryOut = await state.core.submit(query, run_from_header(run))
        except (sqlite3.OperationalError, KeyConflict, RunNotFound, CandidateLimit):
            return None  # the route answers these (503, 409, 404, 422)
        return out.model_dump_json().encode()
