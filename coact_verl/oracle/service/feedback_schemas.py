"""Request and response models of the feedback API (v1): comparison votes, coactive edits, pairs, quality."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from coact_verl.oracle.service.schemas import Key, LongText, Task, _Strict

Side = Literal["a", "b"]
MAX_BATCH = 1000


class VoteIn(_Strict):
    """A comparison vote; ``key`` makes it idempotent per annotator (a replay returns the stored vote).

    ``stronger``: the side from the model believed stronger on average; ``picked``: the side the annotator
    preferred; ``better``: the side known to be better, set only for control votes.
    """

    key: Key
    prompt_id: Key
    prompt: LongText
    task: Task
    response_a: LongText
    response_b: LongText
    stronger: Side
    picked: Side
    better: Side | None = None

    @model_validator(mode="after")
    def _distinct(self) -> VoteIn:
        if self.response_a.strip() == self.response_b.strip():
            raise ValueError("response_a and response_b must differ")
        return self


class VotesIn(_Strict):
    """Up to 1000 votes, stored in one transaction (all or none)."""

    votes: list[VoteIn] = Field(min_length=1, max_length=MAX_BATCH)


class VoteOut(BaseModel):
    """A stored vote (texts are not echoed); ``created`` is false for a replayed key."""

    id: int
    key: str
    created: bool
    prompt_id: str
    task: str
    stronger: Side
    picked: Side
    better: Side | None
    created_at: float


class VotesOut(BaseModel):
    """The stored votes in request order, and how many of them are new."""

    votes: list[VoteOut]
    created: int


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
    """A training pair, chosen ≻ rejected; ``weight`` is 1 for an edit and the annotator's η̂ for a vote."""

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


class QualityOut(BaseModel):
    """η̂ per annotator with votes, μ̂ (the given μ when ``mu_given``; ``null`` when estimated from no vote)."""

    mu: float | None
    mu_given: bool
    votes: int
    annotators: list[AnnotatorQualityOut]
