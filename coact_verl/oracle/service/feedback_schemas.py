"""Request and response models of the feedback API (v1): comparison votes, coactive edits, pairs, quality."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from coact_verl.oracle.service.schemas import MAX_INT, Key, LongText, Task, _Strict

Side = Literal["a", "b"]
MAX_BATCH = 1000


class VoteIn(_Strict):
    """A comparison vote on a comparison leased by ``GET /v1/comparisons/next``; ``key`` makes it idempotent per
    annotator (a replay returns the stored vote, another body under the same key is a 409).

    ``picked``: the side the annotator preferred. Which side came from the stronger model, and which is known to
    be better (controls), is the service's own record, never part of a vote.
    """

    key: Key
    ticket: Key
    picked: Side


class VotesIn(_Strict):
    """Up to 1000 votes, stored in one transaction (all or none)."""

    votes: list[VoteIn] = Field(min_length=1, max_length=MAX_BATCH)


class VoteOut(BaseModel):
    """A stored vote (texts are not echoed); ``created`` is false for a replayed key."""

    id: int
    key: str
    ticket: str
    created: bool
    prompt_id: str
    task: str
    picked: Side
    created_at: float


class VotesOut(BaseModel):
    """The stored votes in request order, and how many of them are new."""

    votes: list[VoteOut]
    created: int


class ComparisonIn(_Strict):
    """A comparison to show annotators: ``stronger`` names the side from the model believed stronger, ``better``
    (controls only) the side known to be better; ``annotator`` restricts it to one annotator's queue."""

    prompt_id: Key
    prompt: LongText
    task: Task
    response_a: LongText
    response_b: LongText
    stronger: Side
    better: Side | None = None
    annotator: int | None = Field(None, ge=1, le=MAX_INT)

    @model_validator(mode="after")
    def _distinct(self) -> ComparisonIn:
        if self.response_a.strip() == self.response_b.strip():
            raise ValueError("response_a and response_b must differ")
        return self


class ComparisonsIn(_Strict):
    """Up to 1000 comparisons, stored in one transaction."""

    comparisons: list[ComparisonIn] = Field(min_length=1, max_length=MAX_BATCH)


class ComparisonsCreated(BaseModel):
    """Ids of the new comparisons, and how many comparisons (and controls among them) the service holds."""

    ids: list[int]
    total: int
    controls: int


class ControlsIn(_Strict):
    """Make up to ``limit`` control comparisons from gold-labelled queries with a right and a wrong candidate."""

    limit: int = Field(1000, ge=1, le=100_000)


class ServedComparisonOut(BaseModel):
    """A comparison as an annotator sees it: vote on it with its ``ticket``."""

    ticket: str
    prompt_id: str
    prompt: str
    task: str
    response_a: str
    response_b: str


class ComparisonsOut(BaseModel):
    """Comparisons leased to the caller (its unvoted ones first); empty when none is left."""

    comparisons: list[ServedComparisonOut]


class TrustIn(_Strict):
    """Weight of an annotator's votes and edits in place of its η̂; ``null`` returns to η̂."""

    trust: float | None = Field(..., ge=0.0, le=1.0, allow_inf_nan=False)


class EditIn(_Strict):
    """A coactive edit: ``edited`` ≻ ``original`` (a preference, not a gold answer); idempotent by ``key``."""

    key: Key
    prompt_id: Key
    prompt: LongText
    task: Task
    original: LongText
    edited: LongText

    @model_validator(mode="after")
    def _changed(self) -> EditIn:
        if not self.edited.strip() or self.edited.strip() == self.original.strip():
            raise ValueError("edited must be non-empty and differ from original (ignoring surrounding whitespace)")
        return self


class EditOut(BaseModel):
    """A stored edit (texts are not echoed); ``created`` is false for a replayed key."""

    id: int
    key: str
    created: bool
    prompt_id: str
    task: str
    created_at: float


class FeedbackPairOut(BaseModel):
    """A training pair, chosen ≻ rejected; ``weight`` is the annotator's admin-set trust, else its η̂."""

    id: int
    kind: Literal["edit", "vote"]
    prompt_id: str
    prompt: str
    task: str
    chosen: str
    rejected: str
    weight: float
    annotator: int


class PairsOut(BaseModel):
    """A page of pairs; pass ``next_since_id`` as ``since_id`` to continue (it also moves past filtered votes)."""

    pairs: list[FeedbackPairOut]
    next_since_id: int


class AnnotatorQualityOut(BaseModel):
    """One annotator's vote count (``control_votes`` of them controls) and EM estimate η̂ in [0, 1]."""

    id: int
    name: str
    votes: int
    control_votes: int
    eta: float
    trust: float | None = None


class QualityOut(BaseModel):
    """η̂ per annotator with votes, μ̂ (the given μ when ``mu_given``; ``null`` when estimated from no vote)."""

    mu: float | None
    mu_given: bool
    votes: int
    annotators: list[AnnotatorQualityOut]
