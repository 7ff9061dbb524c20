"""Liveness probe (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from coact_verl.oracle.service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def read_health(request: Request) -> Health:
    """The service is up and its store is open."""
    return Health(backend=request.app.state.core.backend.name)
