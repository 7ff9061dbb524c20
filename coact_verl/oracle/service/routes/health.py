"""Liveness probe and counters (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from coact_verl.oracle.service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def read_health(request: Request) -> Health:
    """The service is up and its store is open."""
    return Health(backend=request.app.state.core.backend.name)


@router.get("/metrics", response_class=PlainTextResponse)
async def read_metrics(request: Request) -> PlainTextResponse:
    """Counters of this worker in Prometheus text format: slow and failed database calls (a database locked by
    another process shows up here and in the log), and trainer queries refused as sent (key reused with another
    body, unknown run, more candidates than the run admits)."""
    metrics = request.app.state.core.metrics
    names = ("db_slow_calls_total", "db_slow_seconds_total", "db_locked_total", "db_errors_total",
             "key_conflicts_total", "unknown_run_total", "over_candidate_cap_total")  # fmt: skip
    return PlainTextResponse("".join(f"oracle_{name} {metrics[name]:g}\n" for name in names))
