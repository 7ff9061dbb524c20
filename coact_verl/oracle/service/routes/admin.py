"""Admin endpoints: hidden gold answers and annotator accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from coact_verl.oracle.service.auth import ADMIN, Principal, require
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.schemas import AnnotatorIn, AnnotatorOut, Answer, GoldOut, Key

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
