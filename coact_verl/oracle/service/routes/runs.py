"""Start-up handshake of a trainer: who the caller is, what the service labels with, and its budget."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from coact_verl.oracle.service.auth import TRAINER, Principal, require
from coact_verl.oracle.service.core import OracleCore, budget_out
from coact_verl.oracle.service.schemas import BudgetOut

router = APIRouter(prefix="/v1", tags=["runs"])


class HandshakeOut(BaseModel):
    """What a trainer checks before its first step.

    ``needs_gold``: the backend labels against stored gold answers (``gold``, ``simulated``), so ``gold`` (the
    number stored) must be above 0 for it to label anything.
    """

    role: str
    backend: str
    needs_gold: bool
    gold: int
    budget: BudgetOut
    api_version: str


@router.get("/handshake", response_model=HandshakeOut)
async def handshake(request: Request, principal: Principal = Depends(require(TRAINER))) -> HandshakeOut:
    """The trainer role's check at start-up: token valid, backend, gold present, budget (total and per step)."""
    from coact_verl.oracle.service.app import API_VERSION

    core: OracleCore = request.app.state.core
    budget = await core.db(core.store.budget)
    gold = await core.db(core.store.gold_count)
    backend = core.backend
    return HandshakeOut(
        role=principal.role,
        backend=backend.name,
        needs_gold=bool(getattr(backend, "needs_gold", False)),
        gold=gold,
        budget=budget_out(budget),
        api_version=API_VERSION,
    )
