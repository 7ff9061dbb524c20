"""Feedback: comparisons, votes and coactive edits (annotators); training pairs, annotator quality (trainer, admin).

* ``POST /v1/comparisons`` (trainer, admin) ``{"comparisons": [ComparisonIn]}``: comparisons with the service's
  record of which side came from the stronger model and, for controls, which side is better.
  ``POST /v1/comparisons/controls`` (admin) ``{"limit": n}``: controls from gold-labelled queries.
* ``GET /v1/comparisons/next?limit=`` (annotator): comparisons leased to the caller, each behind a ticket; controls
  and ordinary comparisons look the same and come in random order.
* ``POST /v1/votes`` (annotator) ``{"key", "ticket", "picked"}`` → ``VoteOut``; ``POST /v1/votes/batch``
  ``{"votes": [VoteIn]}`` (≤ 1000, one transaction). Keys are idempotent per annotator (another body: 409); a ticket
  not leased to the caller: 404; a second vote on one ticket: 409.
* ``POST /v1/edits`` (annotator) ``EditIn`` → ``EditOut``: ``edited`` ≻ ``original``; 422 when they do not differ.
* ``GET /v1/feedback/pairs?since_id=&limit=&min_eta=`` (trainer, admin) → ``{"pairs": [...], "next_since_id"}`` in
  commit order. Edit: chosen = edited; vote: chosen = picked; the weight of both is the annotator's admin-set trust,
  else its current η̂ (0 without votes). Records whose weight is below ``min_eta`` (default: the service's
  ``vote_min_eta``) are left out of the page, yet ``next_since_id`` moves past them: a page may hold fewer than
  ``limit`` pairs, even none, and they are not offered again if η̂ later rises. Stop when ``next_since_id`` equals
  ``since_id``.
* ``GET /v1/annotators/quality`` (trainer, admin) → η̂ per annotator and μ̂ from all votes (EM).

η̂ and μ̂ are fitted from what the service knows: the picks, against the sides it recorded. Annotators see only
their own stored votes and edits, never an η̂, a control flag or a stronger side.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Hashable
from typing import Any, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from coact_verl.feedback.pairs_from_votes import EditRecord, VoteRecord, edit_to_pair, vote_to_pair
from coact_verl.oracle.service.auth import ADMIN, ANNOTATOR, TRAINER, Principal, require
from coact_verl.oracle.service.comparison_store import NewComparison, UnknownTicket, VoteConflict
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.feedback_schemas import (
    AnnotatorQualityOut,
    ComparisonsCreated,
    ComparisonsIn,
    ComparisonsOut,
    ControlsIn,
    EditIn,
    EditOut,
    FeedbackPairOut,
    PairsOut,
    QualityOut,
    ServedComparisonOut,
    VoteIn,
    VoteOut,
    VotesIn,
    VotesOut,
)
from coact_verl.oracle.service.feedback_store import StoredFeedback
from coact_verl.oracle.service.quality import AnnotatorQuality
from coact_verl.oracle.service.schemas import MAX_INT

router = APIRouter(prefix="/v1", tags=["feedback"])
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "key used before with another body, or ticket already voted on"}
}
_VOTE_ERRORS: dict[int | str, dict[str, Any]] = {**_CONFLICT, 404: {"description": "ticket not leased to the caller"}}


def _vote_out(stored: StoredFeedback, ticket: str) -> VoteOut:
    record = stored.record
    assert isinstance(record, VoteRecord)
    return VoteOut(
        id=record.id,
        key=stored.key,
        ticket=ticket,
        created=stored.created,
        prompt_id=record.prompt_id,
        task=record.task,
        picked=record.picked,
        created_at=stored.created_at,
    )


def _edit_out(stored: StoredFeedback) -> EditOut:
    record = stored.record
    return EditOut(
        id=record.id,
        key=stored.key,
        created=stored.created,
        prompt_id=record.prompt_id,
        task=record.task,
        created_at=stored.created_at,
    )


async def _put_votes(request: Request, annotator_id: int, votes: list[VoteIn]) -> list[StoredFeedback]:
    core: OracleCore = request.app.state.core
    try:
        return await core.db(core.store.put_votes, annotator_id, [(v.key, v.ticket, v.picked) for v in votes])
    except UnknownTicket as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except VoteConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.post("/comparisons", response_model=ComparisonsCreated)
async def create_comparisons(
    body: ComparisonsIn, request: Request, _: Principal = Depends(require(TRAINER, ADMIN))
) -> ComparisonsCreated:
    """Store comparisons for annotators to vote on (``better`` marks a control)."""
    core: OracleCore = request.app.state.core
    items = [NewComparison(**c.model_dump()) for c in body.comparisons]
    ids = await core.db(core.store.create_comparisons, items)
    total, controls = await core.db(core.store.comparison_count)
    return ComparisonsCreated(ids=ids, total=total, controls=controls)


@router.post("/comparisons/controls", response_model=ComparisonsCreated)
async def create_controls(
    body: ControlsIn, request: Request, _: Principal = Depends(require(ADMIN))
) -> ComparisonsCreated:
    """Make control comparisons from gold-labelled queries (a right and a wrong candidate, sides at random)."""
    core: OracleCore = request.app.state.core
    await core.db(core.store.controls_from_gold, body.limit)
    total, controls = await core.db(core.store.comparison_count)
    return ComparisonsCreated(ids=[], total=total, controls=controls)


@router.get("/comparisons/next", response_model=ComparisonsOut)
async def next_comparisons(
    request: Request,
    limit: int = Query(1, ge=1, le=1000, description="most comparisons to lease"),
    who: Principal = Depends(require(ANNOTATOR)),
) -> ComparisonsOut:
    """Lease comparisons to the caller: its unvoted ones first, then new ones in random order."""
    core: OracleCore = request.app.state.core
    served = await core.db(core.store.lease_comparisons, who.annotator_id, limit)
    return ComparisonsOut(comparisons=[ServedComparisonOut(**dataclasses.asdict(c)) for c in served])


@router.post("/votes", response_model=VoteOut, responses=_VOTE_ERRORS)
async def create_vote(body: VoteIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> VoteOut:
    """Store the caller's vote on a leased comparison, once per key."""
    # require(ANNOTATOR) admits annotator principals only, and those always carry their id.
    stored = await _put_votes(request, cast(int, who.annotator_id), [body])
    return _vote_out(stored[0], body.ticket)


@router.post("/votes/batch", response_model=VotesOut, responses=_VOTE_ERRORS)
async def create_votes(body: VotesIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> VotesOut:
    """Store up to 1000 votes of the caller in one transaction, once per key."""
    stored = await _put_votes(request, cast(int, who.annotator_id), body.votes)  # an annotator's id, as above
    out = [_vote_out(s, v.ticket) for s, v in zip(stored, body.votes, strict=True)]
    return VotesOut(votes=out, created=sum(s.created for s in stored))


@router.post("/edits", response_model=EditOut, responses=_CONFLICT)
async def create_edit(body: EditIn, request: Request, who: Principal = Depends(require(ANNOTATOR))) -> EditOut:
    """Store the caller's edit of a response (``edited`` ≻ ``original``), once per key."""
    core: OracleCore = request.app.state.core
    edit = EditRecord(0, None, body.prompt_id, body.prompt, body.task, body.original, body.edited)
    try:
        stored = await core.db(core.store.put_edit, who.annotator_id, body.key, edit)
    except VoteConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return _edit_out(stored)


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
    records = await core.db(core.store.feedback_since, since_id, limit, request.app.state.settings.page_max_bytes)
    weights: dict[Hashable, float] = {}
    if records:  # counts read after the page: they cover its votes
        quality: AnnotatorQuality = request.app.state.quality
        weights = dict((await asyncio.to_thread(quality.estimate, await core.db(core.store.vote_counts))).eta)
        weights.update((await core.db(core.store.annotator_trust)).items())
    threshold = request.app.state.settings.vote_min_eta if min_eta is None else min_eta
    pairs = []
    for record in records:
        weight = float(weights.get(record.annotator, 0.0))
        if weight < threshold:
            continue
        pair = edit_to_pair(record) if isinstance(record, EditRecord) else vote_to_pair(record, weight)
        pairs.append(FeedbackPairOut(**{**dataclasses.asdict(pair), "weight": weight}))
    return PairsOut(pairs=pairs, next_since_id=records[-1].id if records else since_id)


@router.get("/annotators/quality", response_model=QualityOut)
async def read_quality(request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> QualityOut:
    """η̂ per annotator with votes (ascending id) and μ̂, fitted by EM on all stored votes."""
    core: OracleCore = request.app.state.core
    quality: AnnotatorQuality = request.app.state.quality
    counts = await core.db(core.store.vote_counts)
    names = await core.db(core.store.annotator_names)
    trust = await core.db(core.store.annotator_trust)
    result = await asyncio.to_thread(quality.estimate, counts)
    annotators = [
        AnnotatorQualityOut(
            id=a, name=names.get(a, ""), votes=sum(c), control_votes=c[2] + c[3], eta=result.eta[a], trust=trust.get(a)
        )
        for a, c in counts.items()
    ]
    mu = quality.mu if quality.mu is not None else (result.mu if any(c[0] + c[1] for c in counts.values()) else None)
    return QualityOut(
        mu=mu, mu_given=quality.mu is not None, votes=sum(a.votes for a in annotators), annotators=annotators
    )
