"""FastAPI application factory of the oracle service."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from coact_verl.oracle.backends import make_backend
from coact_verl.oracle.service.auth import SECURITY_SCHEME, TokenAuth
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.db import Store
from coact_verl.oracle.service.errors import install_error_handlers
from coact_verl.oracle.service.fast_path import QueriesFastPath
from coact_verl.oracle.service.gold_io import load_gold_file
from coact_verl.oracle.service.guard import Guard
from coact_verl.oracle.service.process import SUPERVISOR_PID_ENV, die_with_parent
from coact_verl.oracle.service.quality import AnnotatorQuality
from coact_verl.oracle.service.routes import admin, annotate, budget, feedback, health, queries, runs, tasks
from coact_verl.oracle.service.schemas import API_VERSION
from coact_verl.oracle.service.settings import OracleSettings

log = logging.getLogger("coact_verl.oracle")
MAX_BODY_BYTES = 16 * 2**20
_AUTH_RESPONSES = {"401": {"description": "missing or unknown token"}, "403": {"description": "wrong role"}}


def apply_start_settings(store: Store, settings: OracleSettings) -> None:
    """Load the gold file and set the budget given at start (once per service, not per worker)."""
    if settings.gold_path:
        count = store.put_gold(load_gold_file(settings.gold_path))
        log.info("loaded %d gold answers from %s", count, settings.gold_path)
    if settings.budget_total is not None or settings.budget_per_step is not None:
        store.set_budget(settings.budget_total, settings.budget_per_step)


def create_app(settings: OracleSettings) -> FastAPI:
    """Build the app; the store, backend, gold file and budget are set up in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.db_path, synchronous=settings.db_synchronous)
        apply_start_settings(store, settings)
        backend = make_backend(settings)
        core = OracleCore(
            store,
            backend,
            db_threads=settings.db_threads,
            lease_s=settings.lease_s,
            commit_batch=settings.commit_batch,
            max_candidates=settings.max_candidates,
        )
        app.state.settings, app.state.store, app.state.core = settings, store, core
        app.state.auth = TokenAuth(store, settings.admin_token, settings.trainer_token)
        app.state.quality = AnnotatorQuality(settings.vote_mu)
        if not settings.admin_token:
            log.warning("no admin token: admin endpoints are unreachable")
        core.spawn(core.recover())
        if settings.human_task_ttl_s is not None and not backend.automatic:
            core.spawn(core.expire_human_tasks(settings.human_task_ttl_s))
        # Move the start-up objects out of the collector's sight: full collections stay short during serving.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await core.aclose()
            store.close()

    # Bound request bodies where this FastAPI version can (413 beyond); field limits bound them anyway.
    limit: dict[str, Any] = (
        {"max_body_size": MAX_BODY_BYTES} if "max_body_size" in inspect.signature(FastAPI).parameters else {}
    )
    app = FastAPI(
        title="coact-verl oracle",
        version=API_VERSION,
        description="Budgeted oracle labels for CoAct training: gold, simulated, LLM-judge or human annotators;"
        " comparison votes and edits from users as preference pairs.",
        lifespan=lifespan,
        # The interactive docs load scripts from a CDN, on the origin where /annotate keeps its token: off unless
        # asked for (the spec stays at /openapi.json).
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        **limit,
    )
    for module in (health, queries, budget, admin, tasks, feedback, annotate, runs):
        app.include_router(module.router)
    _declare_bearer_auth(app)
    install_error_handlers(app)

    @app.exception_handler(sqlite3.OperationalError)
    async def database_busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        """Lock timeouts and I/O errors are transient for the caller: 503, to be retried (keys are idempotent)."""
        log.error("database error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "database unavailable, retry"}, status_code=503, headers={"Retry-After": "1"})

    return app


def _declare_bearer_auth(app: FastAPI) -> None:
    """Add the bearer scheme (and the 400/401/403/413 answers) to the OpenAPI spec of every ``/v1`` operation."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEME
            for path, operations in spec["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
                        operation.setdefault("responses", {}).update(_AUTH_RESPONSES)
                        if "requestBody" in operation:
                            operation["responses"]["400"] = {"description": "malformed request body"}
                            operation["responses"]["413"] = {"description": f"body over {MAX_BODY_BYTES} bytes"}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_asgi_app(settings: OracleSettings) -> Any:
    """What uvicorn serves: the FastAPI app, behind the lean path for trainer queries when ``settings.fast_path``
    (so that the hot endpoint skips FastAPI's middleware stack and per-request checks), behind the guard
    (outermost: authorisation, body limits and timeouts, annotator quotas before any work)."""
    app = create_app(settings)
    inner = QueriesFastPath(app) if settings.fast_path else app
    return Guard(
        inner,
        app,
        body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        annotator_rps=settings.annotator_rps,
        annotator_bytes_per_s=settings.annotator_bytes_per_s,
    )


def create_asgi_app_from_env() -> Any:
    """Factory for worker processes: settings come from ``$COACT_ORACLE_SETTINGS``; the worker dies with its
    supervisor."""
    parent = os.environ.get(SUPERVISOR_PID_ENV)
    die_with_parent(int(parent) if parent else None)
    return create_asgi_app(OracleSettings.from_env())
