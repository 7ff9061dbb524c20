"""Label budget: read (trainer, admin) and set (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from coact_verl.oracle.service.auth import ADMIN, TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore, budget_out
from coact_verl.oracle.service.schemas import BudgetIn, BudgetOut

router = APIRouter(prefix="/v1", tags=["budget"])


@router.get("/budget", response_model=BudgetOut)
async def read_budget(request: Request, _: Principal = Depends(require(TRAINER, ADMIN))) -> BudgetOut:
    """Total, spent and remaining labels."""
    core: OracleCore = request.app.state.core
    return budget_out(await core.db(core.store.budget))


@router.post("/budget", response_model=BudgetOut)
async def update_budget(body: BudgetIn, request: Request, _: Principal = Depends(require(ADMIN))) -> BudgetOut:
    """Set the total (``null`` = unbounded) and, if given, the per-step budget."""
    core: OracleCore = request.app.state.core
    keep = "per_step" not in body.model_fields_set
    return budget_out(await core.db(core.store.set_budget, body.total, body.per_step, keep_per_step=keep))
