"""Trainer endpoints: submit queries, read labels."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from coact_verl.oracle.service.auth import ADMIN, TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.run_store import RUN_HEADER, run_from_header
from coact_verl.oracle.service.schemas import MAX_INT, LabelOut, LabelRecord, LabelsOut, QueryIn, QueryOut

router = APIRouter(prefix="/v1", tags=["trainer"])


_QUERY_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown run (X-CoAct-Run header)"},
    409: {"description": "key used before with another body"},
    422: {"description": "invalid body, or more candidates than the run admits"},
}


@router.post("/queries", response_model=QueryOut, responses=_QUERY_ERRORS)
async def create_query(body: QueryIn, request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> Response:
    """Ask for a label, charged to the run named by the ``X-CoAct-Run`` header (the default run without one) at
    the run's current step; automatic backends answer now, ``human`` answers ``pending``. Idempotent by ``key``
    within the run. One query costs one label, ``no_gold`` answers included."""
    core: OracleCore = request.app.state.core
    # already a QueryOut: serialise it once, without re-validation
    out = await core.submit(body, run_from_header(request.headers.get(RUN_HEADER)))
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/labels", response_model=LabelsOut)
async def read_labels(
    request: Request,
    since_id: int = Query(0, ge=0, le=MAX_INT, description="return labels with a larger id"),
    limit: int = Query(500, ge=1, le=5000, description="page size"),
    _: Principal = Depends(require(TRAINER, ADMIN)),
) -> LabelsOut:
    """Labels of the caller's run (``X-CoAct-Run``) in id order (commit order), e.g. to collect late human labels
    with their prompt and task; a page ends early once its texts reach the service's ``page_max_bytes`` characters."""
    core: OracleCore = request.app.state.core
    run = run_from_header(request.headers.get(RUN_HEADER))
    await core.db(core.store.run, run)  # 404 for an unknown run
    rows = await core.db(core.store.labels_since, since_id, limit, request.app.state.settings.page_max_bytes, run)
    records = [
        LabelRecord(
            id=r["id"],
            query_id=r["query_id"],
            key=r["key"],
            prompt_id=r["prompt_id"],
            prompt=r["prompt"],
            task=r["task"],
            step=r["step"],
            label=LabelOut(answer=r["answer"], correct=r["correct"], source=r["source"]),
            annotator=r["annotator"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
    return LabelsOut(labels=records, next_since_id=records[-1].id if records else since_id)
