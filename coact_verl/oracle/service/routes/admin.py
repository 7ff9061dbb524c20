"""Admin endpoints: hidden gold answers and annotator accounts (creation, trust, revocation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Response, status

from coact_verl.oracle.service.auth import ADMIN, Principal, require
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.feedback_schemas import TrustIn
from coact_verl.oracle.service.schemas import MAX_INT, AnnotatorIn, AnnotatorOut, Answer, GoldOut, Key

router = APIRouter(prefix="/v1", tags=["admin"])
GoldMap = Annotated[dict[Key, Answer], Body(max_length=100_000, description="{prompt_id: gold answer}")]


@router.post("/gold", response_model=GoldOut)
async def upload_gold(answers: GoldMap, request: Request, _: Principal = Depends(require(ADMIN))) -> GoldOut:
    """Insert or replace hidden gold answers; they are never returned by any endpoint."""
    core: OracleCore = request.app.state.core
    written = await core.db(core.store.put_gold, answers)
    return GoldOut(written=written, total=await core.db(core.store.gold_count))


@router.post("/annotators", response_model=AnnotatorOut)
async def create_annotator(body: AnnotatorIn, request: Request, _: Principal = Depends(require(ADMIN))) -> AnnotatorOut:
    """Create an annotator and return its bearer token (shown only here)."""
    core: OracleCore = request.app.state.core
    annotator_id, token = await core.db(core.store.create_annotator, body.name)
    return AnnotatorOut(id=annotator_id, name=body.name, token=token)


@router.put(
    "/annotators/{annotator_id}/trust", response_model=TrustIn, responses={404: {"description": "no such annotator"}}
)
async def set_trust(
    body: TrustIn, request: Request, annotator_id: int = Path(ge=1, le=MAX_INT), _: Principal = Depends(require(ADMIN))
) -> TrustIn:
    """Weight the annotator's votes and edits by ``trust`` instead of its η̂ (``null``: back to η̂)."""
    core: OracleCore = request.app.state.core
    if not await core.db(core.store.set_trust, annotator_id, body.trust):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such annotator")
    return body


@router.delete("/annotators/{annotator_id}", status_code=204, responses={404: {"description": "no such annotator"}})
async def revoke_annotator(
    request: Request, annotator_id: int = Path(ge=1, le=MAX_INT), _: Principal = Depends(require(ADMIN))
) -> Response:
    """Revoke the annotator's token (within ``TokenAuth.CACHE_S`` seconds in every worker); its feedback stays."""
    core: OracleCore = request.app.state.core
    if not await core.db(core.store.revoke_annotator, annotator_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such annotator")
    request.app.state.auth.forget(annotator_id)
    return Response(status_code=204)
