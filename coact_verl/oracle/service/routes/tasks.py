"""Annotator endpoints: fetch the next task, answer it. Annotators never see gold or others' labels."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status

from coact_verl.oracle.service.auth import ANNOTATOR, Principal, require
from coact_verl.oracle.service.core import OracleCore, label_out
from coact_verl.oracle.service.schemas import MAX_INT, AnswerIn, AnswerOut, NextTaskOut, TaskCandidate, TaskOut

router = APIRouter(prefix="/v1/tasks", tags=["annotator"])


@router.get("/next", response_model=NextTaskOut)
async def read_next_task(request: Request, who: Principal = Depends(require(ANNOTATOR))) -> NextTaskOut:
    """Lease the oldest pending query to the caller (``task: null`` when none is waiting)."""
    core: OracleCore = request.app.state.core
    query = await core.db(core.store.next_task, who.annotator_id, core.lease_s)
    if query is None:
        return NextTaskOut(task=None)
    cands = [TaskCandidate(index=i, answer=c.answer, response=c.response) for i, c in enumerate(query.candidates)]
    return NextTaskOut(task=TaskOut(query_id=query.query_id, prompt=query.prompt, task=query.task, candidates=cands))


@router.post(
    "/{query_id}/answer",
    response_model=AnswerOut,
    responses={409: {"description": "not a pending task leased to the caller, or no human backend"}},
)
async def answer_task(
    request: Request,
    body: AnswerIn,
    query_id: int = Path(ge=0, le=MAX_INT),
    who: Principal = Depends(require(ANNOTATOR)),
) -> AnswerOut:
    """Label a task the caller holds: ``correct`` candidate indices and/or a typed ``answer``."""
    core: OracleCore = request.app.state.core
    verdict = getattr(core.backend, "verdict", None)
    if verdict is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "this service does not take human labels")
    query = await core.db(core.store.leased_task, query_id, who.annotator_id)
    if query is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no pending task with this id is leased to you")
    annotator = f"human-{who.annotator_id}"
    try:  # comparing a typed answer may be slow (math-verify): keep it off the event loop
        result = await asyncio.to_thread(verdict, query.candidates, query.task, body.correct, body.answer, annotator)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    stored = await core.db(core.store.finish, query_id, result, annotator_id=who.annotator_id)
    if stored is None or stored.annotator != result.annotator:
        raise HTTPException(status.HTTP_409_CONFLICT, "this task was labelled or re-leased meanwhile")
    return AnswerOut(query_id=query_id, label=label_out(stored))
