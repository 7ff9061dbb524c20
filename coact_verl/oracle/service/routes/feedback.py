"""Feedback: comparison votes and coactive edits (annotators); training pairs, annotator quality (trainer, admin).

* ``POST /v1/votes`` (annotator) ``VoteIn`` → ``VoteOut``; ``POST /v1/votes/batch`` ``{"votes": [VoteIn]}`` (≤ 1000,
  one transaction) → ``{"votes": [VoteOut], "created": n}``. Keys are idempotent per annotator.
* ``POST /v1/edits`` (annotator) ``EditIn`` → ``EditOut``: ``edited`` ≻ ``original``; 422 when they do not differ.
* ``GET /v1/feedback/pairs?since_id=&limit=&min_eta=`` (trainer, admin) → ``{"pairs": [...], "next_since_id"}`` in
  commit order. Edit: chosen = edited, weight 1. Vote: chosen = picked, weight = the annotator's current η̂. Votes of
  annotators with η̂ < ``min_eta`` (default: the service's ``vote_min_eta``) are left out of the page, yet
  ``next_since_id`` moves past them: a page may hold fewer than ``limit`` pairs, even none, and they are not
  offered again if η̂ later rises. Stop when ``next_since_id`` equals ``since_id``.
* ``GET /v1/annotators/quality`` (trainer, admin) → η̂ per annotator and μ̂ from all votes (EM).

Annotators see only their own stored votes and edits, never an η̂.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Hashable
from typing import TypeVar

from fastapi import APIRouter, Depends, Query, Request

from coact_verl.feedback.pairs_from_votes import EditRecord, VoteRecord, pairs_from_feedback
from coact_verl.oracle.service.auth import ADMIN, ANNOTATOR, TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.feedback_schemas import (
    AnnotatorQualityOut,
    EditIn,
    EditOut,
    FeedbackPairOut,
    PairsOut,
    QualityOut,
    VoteIn,
    VoteOut,
    VotesIn,
    VotesOut,
)
from coact_verl.oracle.service.feedback_store import StoredFeedback
from coact_verl.oracle.service.quality import AnnotatorQuality
from coact_verl.oracle.service.schemas import MAX_INT

router = APIRouter(prefix="/v1", tags=["feedback"])
_Out = TypeVar("_Out", VoteOut, EditOut)


def _vote(body: VoteIn) -> tuple[str, VoteRecord]:
    """``(key, vote)`` for the store (id and annotator are set there)."""
    fields = body.model_dump(exclude={"key"})
    return body.key, VoteRecord(id=0, annotator=None, **fields)


def _stored_out(model: type[_Out], stored: StoredFeedback) -> _Out:
    """API form of a stored vote or edit: the record's fields that ``model`` declares (texts are not echoed), with
    the key and whether this request created it."""
    fields = {f.name: getattr(stored.record, f.name) for f in dataclasses.fields(stored.record)}
    fields.update(key=stored.key, created=stored.created, created_at=stored.created_at)
    return model(**{name: fields[name] for name in model.model_fields})


@router.post("/votes", response_model=VoteOut)
async def create_vote(body: VoteIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> VoteOut:
    """Store the caller's comparison vote, once per key."""
    core: OracleCore = request.app.state.core
    stored = await core.db(core.store.put_votes, who.annotator_id, [_vote(body)])
    return _stored_out(VoteOut, stored[0])


@router.post("/votes/batch", response_model=VotesOut)
async def create_votes(body: VotesIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> VotesOut:
    """Store up to 1000 votes of the caller in one transaction, once per key."""
    core: OracleCore = request.app.state.core
    stored = await core.db(core.store.put_votes, who.annotator_id, [_vote(v) for v in body.votes])
    return VotesOut(votes=[_stored_out(VoteOut, s) for s in stored], created=sum(s.created for s in stored))


@router.post("/edits", response_model=EditOut)
async def create_edit(body: EditIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> EditOut:
    """Store the caller's edit of a response (``edited`` ≻ ``original``), once per key."""
    core: OracleCore = request.app.state.core
    edit = EditRecord(0, None, body.prompt_id, body.prompt, body.task, body.original, body.edited)
    stored = await core.db(core.store.put_edit, who.annotator_id, body.key, edit)
    return _stored_out(EditOut, stored)


@router.get("/feedback/pairs", response_model=PairsOut)
async def read_pairs(
    request: Request,
    since_id: int = Query(0, ge=0, le=MAX_INT, description="return feedback with a larger id"),
    limit: int = Query(500, ge=1, le=1000, description="feedback records scanned (pairs returned ≤ this)"),
    min_eta: float | None = Query(None, ge=0.0, le=1.0, allow_inf_nan=False, description="drop votes below this η̂"),
    _: Principal = Depends(require(TRAINER, ADMIN)),
) -> PairsOut:
    """Preference pairs from edits and votes in commit order (see the module docstring for the filter)."""
    core: OracleCore = request.app.state.core
    records = await core.db(core.store.feedback_since, since_id, limit)
    eta: dict[Hashable, float] = {}
    if any(isinstance(r, VoteRecord) for r in records):  # counts read after the page: they cover its votes
        quality: AnnotatorQuality = request.app.state.quality
        eta = (await asyncio.to_thread(quality.estimate, await core.db(core.store.vote_counts))).eta
    threshold = request.app.state.settings.vote_min_eta if min_eta is None else min_eta
    pairs = [
        FeedbackPairOut(
            id=p.id,
            kind=p.kind,
            prompt_id=p.prompt_id,
            prompt=p.prompt,
            task=p.task,
            chosen=p.chosen,
            rejected=p.rejected,
            weight=p.weight,
            annotator=p.annotator,  # type: ignore[arg-type]
        )
        for p in pairs_from_feedback(records, eta, threshold)
    ]
    return PairsOut(pairs=pairs, next_since_id=records[-1].id if records else since_id)


@router.get("/annotators/quality", response_model=QualityOut)
async def read_quality(request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> QualityOut:
    """η̂ per annotator with votes (ascending id) and μ̂, fitted by EM on all stored votes."""
    core: OracleCore = request.app.state.core
    quality: AnnotatorQuality = request.app.state.quality
    counts = await core.db(core.store.vote_counts)
    names = await core.db(core.store.annotator_names)
    result = await asyncio.to_thread(quality.estimate, counts)
    annotators = [
        AnnotatorQualityOut(id=a, name=names.get(a, ""), votes=sum(c), control_votes=c[2] + c[3], eta=result.eta[a])
        for a, c in counts.items()
    ]
    mu = quality.mu if quality.mu is not None else (result.mu if any(c[0] + c[1] for c in counts.values()) else None)
    return QualityOut(
        mu=mu, mu_given=quality.mu is not None, votes=sum(a.votes for a in annotators), annotators=annotators
    )
