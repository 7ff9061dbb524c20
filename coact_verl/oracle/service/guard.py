"""The outermost ASGI layer: who may call, how much they may send, and how slowly, decided before any work.

For every known ``/v1`` operation it checks the bearer token and the role *before the body is read* (401/403),
rejects a declared ``Content-Length`` over the route's limit at once (413), and then reads the body through a
``receive`` that stops at the limit (413) and at a deadline (408, for bodies that trickle in or never come).
Annotators' writes are also held to a per-annotator request rate and byte rate (429 with ``Retry-After``; the
buckets live in each worker process). Request headers over ``max_header_bytes`` in total get 431.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from coact_verl.oracle.service.auth import ADMIN, ANNOTATOR, TRAINER

KiB, MiB = 1 << 10, 1 << 20
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    """Policy of one operation: the roles it admits and its body limit in bytes."""

    method: str
    pattern: re.Pattern[str]
    roles: tuple[str, ...]
    max_body: int


def _route(method: str, path: str, roles: tuple[str, ...], max_body: int = 4 * KiB) -> Route:
    return Route(method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), roles, max_body)


TRAINERS, ADMINS, ANNOTATORS = (TRAINER, ADMIN), (ADMIN,), (ANNOTATOR,)
ROUTES: tuple[Route, ...] = (
    _route("POST", "/v1/queries", TRAINERS, 16 * MiB),  # 256 candidates with long responses
    _route("GET", "/v1/labels", TRAINERS),
    _route("GET", "/v1/budget", TRAINERS),
    _route("POST", "/v1/budget", ADMINS),
    _route("POST", "/v1/gold", ADMINS, 16 * MiB),
    _route("POST", "/v1/annotators", ADMINS),
    _route("PUT", "/v1/annotators/{id}/trust", ADMINS),
    _route("DELETE", "/v1/annotators/{id}", ADMINS),
    _route("GET", "/v1/annotators/quality", TRAINERS),
    _route("GET", "/v1/feedback/pairs", TRAINERS),
    _route("POST", "/v1/comparisons", TRAINERS, 16 * MiB),
    _route("POST", "/v1/comparisons/controls", ADMINS),
    _route("GET", "/v1/comparisons/next", ANNOTATORS),
    _route("POST", "/v1/votes", ANNOTATORS, 16 * KiB),
    _route("POST", "/v1/votes/batch", ANNOTATORS, 2 * MiB),
    _route("POST", "/v1/edits", ANNOTATORS, 4 * MiB),
    _route("GET", "/v1/tasks/next", ANNOTATORS),
    _route("POST", "/v1/tasks/{id}/answer", ANNOTATORS, 256 * KiB),
    _route("GET", "/v1/handshake", (TRAINER,)),
    _route("POST", "/v1/runs", TRAINERS),
    _route("POST", "/v1/runs/step", TRAINERS),
)
DEFAULT_MAX_BODY = 16 * MiB  # any other path


def find_route(method: str, path: str) -> Route | None:
    """The policy of ``method path``, ``None`` for paths this layer does not know (they keep their own checks)."""
    for route in ROUTES:
        if route.method == method and route.pattern.match(path):
            return route
    return None


class TokenBucket:
    """``rate`` units per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.level, self.at = rate, burst, burst, time.monotonic()

    def take(self, amount: float) -> float:
        """Take ``amount`` now and return 0, or return the seconds to wait before it would be available."""
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if amount <= self.level:
            self.level -= amount
            return 0.0
        return (min(amount, self.burst) - self.level) / self.rate if self.rate > 0 else 60.0


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI wrapper; ``app`` is the FastAPI app (its ``state.auth`` is read once the service has started).

    Args:
        inner: what serves admitted requests (the FastAPI app, or the fast path wrapping it).
        app: the FastAPI app.
        body_timeout_s: most seconds to receive a whole request body.
        max_header_bytes: most bytes of request headers, names and values together.
        annotator_rps: sustained write requests per second per annotator (bursts of 10 seconds' worth).
        annotator_bytes_per_s: sustained request-body bytes per second per annotator (bursts of 10 seconds' worth).
    """

    def __init__(
        self,
        inner: Any,
        app: Any,
        *,
        body_timeout_s: float = 30.0,
        max_header_bytes: int = 64 * KiB,
        annotator_rps: float = 20.0,
        annotator_bytes_per_s: float = 512 * KiB,
    ) -> None:
        self.inner, self.app = inner, app
        self.body_timeout_s, self.max_header_bytes = body_timeout_s, max_header_bytes
        self.annotator_rps, self.annotator_bytes_per_s = annotator_rps, annotator_bytes_per_s
        self._requests: dict[int, TokenBucket] = {}
        self._reading: dict[asyncio.Task[Any], float] = {}  # requests reading their body → deadline
        self._expired: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._bytes: dict[int, TokenBucket] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            await _reply(send, 431, "request headers too large")
            return
        method, path = scope["method"], scope["path"]
        route = find_route(method, path)
        quota: int | None = None  # the annotator whose byte quota this body counts against
        max_body = DEFAULT_MAX_BODY if route is None else route.max_body
        auth = getattr(self.app.state, "auth", None)
        if route is not None and auth is not None:
            header = next((v for k, v in headers if k == b"authorization"), b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                await _reply(send, 401, "missing bearer token", [(b"www-authenticate", b"Bearer")])
                return
            principal = auth.identify(token)
            if principal is None:
                await _reply(send, 401, "unknown token", [(b"www-authenticate", b"Bearer")])
                return
            if principal.role not in route.roles:
                await _reply(send, 403, f"this endpoint needs role {' or '.join(route.roles)}")
                return
            if principal.role == ANNOTATOR and method != "GET":
                quota = principal.annotator_id or 0
                if await _over_quota(send, self._buckets(quota)[0].take(1)):
                    return
        declared = _content_length(headers)
        if declared is not None and declared > max_body:
            await _reply(send, 413, f"body over {max_body} bytes")
            return
        if method in ("GET", "HEAD", "DELETE") and declared in (None, 0):
            await self.inner(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        self._reading[task] = time.monotonic() + self.body_timeout_s
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        try:
            body = await _read_body(receive, max_body)
        except _TooLarge:
            await _reply(send, 413, f"body over {max_body} bytes")
            return
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            if sys.version_info >= (3, 11):  # Python 3.10 has no cancellation count to undo
                task.uncancel()
            await _reply(send, 408, f"body not received within {self.body_timeout_s:g} s")
            return
        finally:
            self._reading.pop(task, None)
        if body is None:  # the client went away
            return
        if quota is not None and await _over_quota(send, self._buckets(quota)[1].take(len(body))):
            return
        await self.inner(scope, replay_body(body, receive), send)

    async def _reap(self) -> None:
        """Cancel body reads past their deadline (one timer for all requests: a timer per request costs more than
        the rest of this layer)."""
        while True:
            await asyncio.sleep(min(1.0, self.body_timeout_s / 4))
            now = time.monotonic()
            for task, deadline in list(self._reading.items()):
                if deadline < now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def _buckets(self, annotator: int) -> tuple[TokenBucket, TokenBucket]:
        """(requests, bytes) buckets of an annotator."""
        requests = self._requests.get(annotator)
        if requests is None:
            if len(self._requests) > 100_000:
                self._requests.clear()
                self._bytes.clear()
            requests = self._requests[annotator] = TokenBucket(self.annotator_rps, 10 * self.annotator_rps)
            rate = self.annotator_bytes_per_s
            self._bytes[annotator] = TokenBucket(rate, max(10 * rate, DEFAULT_MAX_BODY))
        return requests, self._bytes[annotator]


async def _over_quota(send: Any, wait: float) -> bool:
    if wait <= 0:
        return False
    retry = str(max(1, round(wait))).encode()
    await _reply(send, 429, "annotator quota exceeded, retry later", [(b"retry-after", retry)])
    return True


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; raises :class:`_TooLarge` past ``limit`` bytes; ``None`` if the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive, more: bool = False) -> Receive:
    """A ``receive`` that hands out the already-read body first, then defers to the real one (the rest of the
    body when ``more``, else disconnects)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _reply(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    if status in (408, 413, 431):
        head.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_MAX_BODY", "ROUTES", "Guard", "TokenBucket", "find_route"]
