"""Bearer-token roles: admin, trainer (both from settings) and annotators (tokens stored hashed)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from coact_verl.oracle.service.db import Store, token_hash

ADMIN, TRAINER, ANNOTATOR = "admin", "trainer", "annotator"
# Declared in the OpenAPI spec by the app factory (the check itself reads the header directly: it is on the hot path).
SECURITY_SCHEME = {"bearer": {"type": "http", "scheme": "bearer", "description": "admin, trainer or annotator token"}}


@dataclass(frozen=True)
class Principal:
    """Who is calling; ``annotator_id`` is set for annotators only."""

    role: str
    annotator_id: int | None = None


class TokenAuth:
    """Maps a bearer token to a :class:`Principal` (``None`` for an unknown or revoked token).

    Annotator tokens are looked up by hash and cached for ``CACHE_S`` seconds, so that a revocation made through
    another worker process takes effect within that time.
    """

    CACHE_S = 2.0

    def __init__(self, store: Store, admin_token: str | None, trainer_token: str | None) -> None:
        self._store = store
        self._fixed = [(t, r) for t, r in ((admin_token, ADMIN), (trainer_token, TRAINER)) if t]
        self._annotators: dict[str, tuple[int, float]] = {}

    def forget(self, annotator_id: int) -> None:
        """Drop an annotator's cached token (after revoking it)."""
        self._annotators = {h: v for h, v in self._annotators.items() if v[0] != annotator_id}

    def identify(self, token: str) -> Principal | None:
        """Constant-time comparison for the fixed tokens; a hashed lookup (cached) for annotators."""
        encoded = token.encode("utf-8", "surrogatepass")
        for fixed, role in self._fixed:
            if secrets.compare_digest(encoded, fixed.encode("utf-8")):
                return Principal(role)
        hashed = token_hash(token)
        cached, now = self._annotators.get(hashed), time.monotonic()
        if cached is not None and now - cached[1] < self.CACHE_S:
            return Principal(ANNOTATOR, cached[0])
        annotator = self._store.annotator_id(hashed)
        if annotator is None:
            self._annotators.pop(hashed, None)
            return None
        if len(self._annotators) > 100_000:  # unknown tokens are never cached; this bounds known ones
            self._annotators.clear()
        self._annotators[hashed] = (annotator, now)
        return Principal(ANNOTATOR, annotator)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency admitting the given roles: no or unknown token → 401, another role → 403."""

    async def dependency(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        principal: Principal | None = request.app.state.auth.identify(token)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token", {"WWW-Authenticate": "Bearer"})
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs role {' or '.join(roles)}")
        return principal

    return dependency
