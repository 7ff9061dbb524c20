"""What the oracle client hands back to training code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def make_key(prompt_id: str, step: int, responses: Sequence[str]) -> str:
    """Idempotency key of a query: SHA-256 of (prompt id, step, responses)."""
    payload = json.dumps([prompt_id, step, list(responses)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class OracleLabel:
    """The oracle's verdict: ``correct`` per candidate (``None`` = no verdict) and the accepted answer."""

    answer: str | None
    correct: tuple[bool | None, ...]
    source: str


@dataclass(frozen=True)
class OracleResult:
    """Outcome of one query.

    ``status`` is the service's (``labeled``, ``pending``, ``over_budget``, ``no_gold``, ``failed``) or
    ``unavailable`` when no answer came within ``max_wait_s`` (``error`` says why).
    """

    status: str
    query_id: int | None = None
    label: OracleLabel | None = None
    budget: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    elapsed_s: float = 0.0

    @property
    def labeled(self) -> bool:
        """Whether a label came back."""
        return self.label is not None


@dataclass
class ClientStats:
    """Counters since the client was made (``unavailable`` counts queries given up on)."""

    requests: int = 0
    retries: int = 0
    unavailable: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
