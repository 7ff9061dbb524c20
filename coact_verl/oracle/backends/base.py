"""Backend interface: what the service hands a labeller and what it gets back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Candidate:
    """One sampled answer of the policy.

    Args:
        answer: extracted final answer, or ``None`` when extraction failed.
        response: the full response text.
        votes: how many of the n samples gave this answer.
    """

    answer: str | None
    response: str
    votes: int = 1


@dataclass(frozen=True)
class LabelQuery:
    """A labelling request as the backend sees it (``gold`` is filled in by the service, never by callers;
    ``run_id`` is the service's run namespace the query is charged to)."""

    query_id: int
    key: str
    prompt_id: str
    prompt: str
    task: str
    step: int
    candidates: Sequence[Candidate]
    gold: str | None = None
    run_id: int = 1


@dataclass(frozen=True)
class LabelResult:
    """What an oracle says about one query.

    Args:
        correct: one verdict per candidate, ``None`` where the oracle gave none.
        answer: the answer the oracle accepts (a candidate's answer or a typed one), if any.
        source: backend name.
        annotator: who labelled it (simulated annotator index, human annotator id), if known.
    """

    correct: tuple[bool | None, ...]
    answer: str | None
    source: str
    annotator: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


class BackendError(RuntimeError):
    """The backend could not label this query now (the charge is refunded; the query may be retried)."""


@runtime_checkable
class Backend(Protocol):
    """A labeller. ``automatic`` backends answer inside the request; the others leave the query pending."""

    name: str
    needs_gold: bool
    automatic: bool

    async def label(self, query: LabelQuery) -> LabelResult:
        """Label one query; raise :class:`BackendError` on a transient failure."""
        ...

    async def aclose(self) -> None:
        """Release clients and pools."""
        ...


def accepted_answer(candidates: Sequence[Candidate], correct: Sequence[bool | None]) -> str | None:
    """The answer of the most-voted candidate marked correct (earliest on ties), or ``None``."""
    best: tuple[int, str] | None = None
    for cand, ok in zip(candidates, correct, strict=False):
        if ok and cand.answer is not None and (best is None or cand.votes > best[0]):
            best = (cand.votes, cand.answer)
    return None if best is None else best[1]
