"""Runs and the trainer's start-up handshake: open a run (fresh or resumed), move it to a step, check the service."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from coact_verl.oracle.service.auth import ADMIN, TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore, budget_out
from coact_verl.oracle.service.run_store import RUN_HEADER, RunInfo, run_from_header
from coact_verl.oracle.service.schemas import API_VERSION, MAX_INT, BudgetOut, Key, _Strict

router = APIRouter(prefix="/v1", tags=["runs"])


class RunIn(_Strict):
    """A run to open: ``name`` (``project/experiment``), ``resume`` to continue its newest generation (a fresh run
    gets a new one: no spent budget, no labels), and the trainer's samples per prompt, which caps candidates per
    query in this run."""

    name: Key
    resume: bool = False
    samples_per_prompt: int | None = Field(None, ge=1, le=4096)


class RunOut(BaseModel):
    """An open run: send ``id`` as the ``X-CoAct-Run`` header of every request of this run. ``resumed`` says whether
    opening it continued an existing run (``null`` where the answer is not an opening)."""

    id: int
    name: str
    generation: int
    resumed: bool | None
    step: int
    max_candidates: int
    budget: BudgetOut


class StepIn(_Strict):
    """The training step the run is at now."""

    step: int = Field(ge=0, le=MAX_INT)


class HandshakeOut(BaseModel):
    """What a trainer checks before its first step.

    ``needs_gold``: the backend labels against stored gold answers (``gold``, ``simulated``), so ``gold`` (the
    number stored) must be above 0 for it to label anything. ``run`` is the caller's run (``X-CoAct-Run``).
    """

    role: str
    backend: str
    needs_gold: bool
    gold: int
    budget: BudgetOut
    api_version: str
    run: RunOut


async def _run_out(request: Request, run: RunInfo, resumed: bool | None) -> RunOut:
    core: OracleCore = request.app.state.core
    budget = await core.db(core.store.budget, run.id)
    cap = request.app.state.settings.max_candidates
    cap = cap if run.max_candidates is None else min(cap, run.max_candidates)
    return RunOut(
        id=run.id,
        name=run.name,
        generation=run.generation,
        resumed=resumed,
        step=run.step,
        max_candidates=cap,
        budget=budget_out(budget),
    )


@router.post("/runs", response_model=RunOut, responses={422: {"description": "samples per prompt over the cap"}})
async def open_run(body: RunIn, request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> RunOut:
    """Open a run by name: resumed (its newest generation) or fresh (a new generation with the service's budget)."""
    core: OracleCore = request.app.state.core
    limit = request.app.state.settings.max_candidates
    if body.samples_per_prompt is not None and body.samples_per_prompt > limit:
        raise HTTPException(
            422,
            f"samples_per_prompt={body.samples_per_prompt} is over this service's cap of {limit} candidates per"
            f" query: start the service with --max-candidates {body.samples_per_prompt} (or more)",
        )
    run, resumed = await core.db(
        core.store.open_run, body.name, resume=body.resume, max_candidates=body.samples_per_prompt
    )
    return await _run_out(request, run, resumed)


@router.post("/runs/step", response_model=RunOut, responses={404: {"description": "unknown run"}})
async def set_step(body: StepIn, request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> RunOut:
    """Move the caller's run (``X-CoAct-Run``) to ``step``: the trainer's driver does this at the start of every
    step, and every query arriving afterwards, from any rollout worker, is charged to that step."""
    core: OracleCore = request.app.state.core
    run = await core.db(core.store.set_step, run_from_header(request.headers.get(RUN_HEADER)), body.step)
    return await _run_out(request, run, None)


@router.get("/handshake", response_model=HandshakeOut, responses={404: {"description": "unknown run"}})
async def handshake(request: Request, principal: Principal = Depends(require(TRAINER))) -> HandshakeOut:
    """The trainer role's check at start-up: token valid, backend, gold present, the run and its budget."""
    core: OracleCore = request.app.state.core
    run = await core.db(core.store.run, run_from_header(request.headers.get(RUN_HEADER)))
    run_out = await _run_out(request, run, None)
    gold = await core.db(core.store.gold_count)
    backend = core.backend
    return HandshakeOut(
        role=principal.role,
        backend=backend.name,
        needs_gold=bool(getattr(backend, "needs_gold", False)),
        gold=gold,
        budget=run_out.budget,
        api_version=API_VERSION,
        run=run_out,
    )
