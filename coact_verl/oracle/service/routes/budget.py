"""Label budget: read (trainer, admin) and set (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from coact_verl.oracle.service.auth import ADMIN, TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore, budget_out
from coact_verl.oracle.service.run_store import RUN_HEADER, run_from_header
from coact_verl.oracle.service.schemas import BudgetIn, BudgetOut

router = APIRouter(prefix="/v1", tags=["budget"])


@router.get("/budget", response_model=BudgetOut)
async def read_budget(request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> BudgetOut:
    """Total, spent and remaining labels of the caller's run (``X-CoAct-Run``; the default run without one)."""
    core: OracleCore = request.app.state.core
    return budget_out(await core.db(core.store.budget, run_from_header(request.headers.get(RUN_HEADER))))


@router.post("/budget", response_model=BudgetOut)
async def update_budget(body: BudgetIn, request: Request, _: Principal = Depends(require(ADMIN))) -> BudgetOut:
    """Set the total (``null`` = unbounded) and, if given, the per-step budget of the run named by ``X-CoAct-Run``;
    without that header, the service's budget: the one every new run starts with, and the default run's."""
    core: OracleCore = request.app.state.core
    keep = "per_step" not in body.model_fields_set
    header = request.headers.get(RUN_HEADER)
    run = None if header is None else run_from_header(header)
    return budget_out(await core.db(core.store.set_budget, body.total, body.per_step, keep_per_step=keep, run_id=run))
