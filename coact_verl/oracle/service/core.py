"""Query handling shared by the routes: charge, label, store; refund on failure; recover after a crash."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar, cast

from coact_verl.oracle.backends import Backend, BackendError, Candidate, LabelQuery, LabelResult
from coact_verl.oracle.service.db import (
    DEFAULT_RUN,
    Budget,
    CandidateLimit,
    KeyConflict,
    Reservation,
    RunNotFound,
    Store,
    check_label,
)
from coact_verl.oracle.service.group_commit import GroupCommit
from coact_verl.oracle.service.schemas import BudgetOut, LabelOut, QueryIn, QueryOut, QueryStatus

log = logging.getLogger("coact_verl.oracle")
_T = TypeVar("_T")
SLOW_DB_S = 1.0
RECOVERY_PAGE = 256  # queries recovered concurrently


def budget_out(budget: Budget) -> BudgetOut:
    """API form of a budget."""
    return BudgetOut(total=budget.total, spent=budget.spent, remaining=budget.remaining, per_step=budget.per_step)


def label_out(label: LabelResult) -> LabelOut:
    """API form of a label (the annotator identity stays out of query responses)."""
    return LabelOut(answer=label.answer, correct=list(label.correct), source=label.source)


def _name(fn: Callable[..., Any]) -> str:
    name: str | None = getattr(fn, "__name__", None)
    if name:
        return name
    inner: str = getattr(getattr(fn, "func", None), "__name__", "?")  # a functools.partial's function
    return inner


class OracleCore:
    """The service's behaviour, independent of HTTP.

    Args:
        store: the SQLite store.
        backend: the labeller.
        db_threads: run store calls in worker threads (else inline on the event loop, where another process holding
            the database lock would stall every request).
        lease_s: how long a human task stays with the annotator who fetched it, in seconds.
        commit_batch: most reservations, or labels, written in one transaction (see :class:`GroupCommit`).
        max_candidates: most candidates per query in a run that sets no cap of its own (422 beyond).
    """

    def __init__(
        self,
        store: Store,
        backend: Backend,
        db_threads: bool = True,
        lease_s: float = 600.0,
        commit_batch: int = 256,
        max_candidates: int | None = None,
    ) -> None:
        self.store, self.backend, self._threads, self.lease_s = store, backend, db_threads, lease_s
        self.max_candidates = max_candidates
        self._background: set[asyncio.Task[Any]] = set()
        # A Counter (an unknown name reads 0) whose values are counts and, for ``*_seconds_total``, float seconds.
        self.metrics = cast("MutableMapping[str, float]", collections.Counter())
        self._inflight: dict[int, asyncio.Future[LabelResult | None]] = {}
        # Fast synchronous backends label inside the charging transaction (one write per batch of queries).
        labeller = getattr(backend, "label_now", None) if getattr(backend, "inline", False) else None
        initial = "labeling" if backend.automatic else "pending"
        reserve_many = functools.partial(
            store.reserve_many,
            needs_gold=backend.needs_gold,
            initial=initial,
            labeller=labeller,
            max_candidates=max_candidates,
        )
        self._reservations: GroupCommit[LabelQuery, Reservation] = GroupCommit(reserve_many, self.db, commit_batch)
        # Labels from backends that answer outside the charging transaction are stored in batches too.
        self._labels: GroupCommit[tuple[int, LabelResult], LabelResult | None] = GroupCommit(
            store.finish_many, self.db, commit_batch
        )

    async def db(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a store call in a worker thread (or inline); a call slower than ``SLOW_DB_S`` (the database locked by
        another process, a slow disk) is logged and counted in :attr:`metrics`."""
        started = time.monotonic()
        try:
            if self._threads:
                return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            self.metrics["db_errors_total"] += 1
            if "locked" in str(exc) or "busy" in str(exc):
                self.metrics["db_locked_total"] += 1
            raise
        finally:
            elapsed = time.monotonic() - started
            if elapsed > SLOW_DB_S:
                self.metrics["db_slow_calls_total"] += 1
                self.metrics["db_slow_seconds_total"] += elapsed
                log.warning(
                    "database call %s took %.1f s (locked by another process or slow disk?)", _name(fn), elapsed
                )

    async def submit(self, body: QueryIn, run_id: int = DEFAULT_RUN) -> QueryOut:
        """Charge and label one query of run ``run_id``, idempotently by key (raises :class:`KeyConflict`,
        :class:`RunNotFound` or :class:`CandidateLimit` for requests that cannot be served as sent)."""
        query = LabelQuery(
            query_id=0,
            key=body.key,
            prompt_id=body.prompt_id,
            prompt=body.prompt,
            task=body.task,
            step=body.step,
            candidates=tuple(Candidate(c.answer, c.response, c.votes) for c in body.candidates),
            run_id=run_id,
        )
        for _ in range(3):
            try:
                res = await self._reservations.submit(query)
            except (KeyConflict, RunNotFound, CandidateLimit):
                raise
            except BackendError as exc:  # the transaction rolled back: nothing charged, nothing stored
                log.warning("labelling %s failed: %s", query.key, exc)
                budget = await self.db(self.store.budget, run_id)
                return QueryOut(query_id=0, status="failed", label=None, budget=budget_out(budget))
            if res.status != "labeling":
                # Every stored status but the internal "labeling" is one the API reports.
                return self._out(res, cast(QueryStatus, res.status), res.label)
            label = await self._label_once(res.query)
            if label is not None:
                return self._out(res, "labeled", label)
            if await self.db(self.store.status, res.query.query_id) != "failed":
                continue  # lost a race with a refund; reserve again
            refunded = dataclasses.replace(res, budget=await self.db(self.store.budget, run_id))
            return self._out(refunded, "failed", None)
        raise RuntimeError("query state kept changing; try again")

    @staticmethod
    def _out(res: Reservation, status: QueryStatus, label: LabelResult | None) -> QueryOut:
        return QueryOut(
            query_id=res.query.query_id,
            status=status,
            label=None if label is None else label_out(label),
            budget=budget_out(res.budget),
        )

    async def _label_once(self, query: LabelQuery) -> LabelResult | None:
        """:meth:`_label`, shared by concurrent requests for the same query (a client retrying while a slow
        backend works must not pay for a second call), and shielded: a client that hangs up does not leave a
        charged query unlabelled."""
        task = self._inflight.get(query.query_id)
        if task is None:
            task = asyncio.ensure_future(self._label(query))
            self._inflight[query.query_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(query.query_id, None))
        return await asyncio.shield(task)

    async def _label(self, query: LabelQuery) -> LabelResult | None:
        """Ask the backend and store its label; refund the charge and return ``None`` on failure."""
        try:
            result = await self.backend.label(query)
            check_label(result, query)
        except Exception as exc:  # noqa: BLE001 - any backend failure refunds instead of failing the request
            log.warning("labelling query %s failed: %r", query.query_id, exc)
            await self.db(self.store.fail, query.query_id)
            return None
        return await self._labels.submit((query.query_id, result))

    async def recover(self) -> int:
        """Label every query charged before a crash but never labelled, a page at a time; returns how many were
        attempted."""
        if not self.backend.automatic:
            return 0
        attempted, after = 0, 0
        while page := await self.db(self.store.unfinished, RECOVERY_PAGE, after):
            await asyncio.gather(*(self._label_once(query) for query in page))  # the backend bounds concurrency
            attempted, after = attempted + len(page), page[-1].query_id
        if attempted:
            log.info("recovered %d charged but unlabelled queries", attempted)
        return attempted

    async def expire_human_tasks(self, ttl_s: float) -> None:
        """Every ``ttl_s / 4`` seconds (at most 30), refund human tasks left unanswered for ``ttl_s`` seconds."""
        while True:
            try:
                expired = await self.db(self.store.expire_pending, ttl_s)
            except sqlite3.OperationalError as exc:
                log.warning("expiring human tasks failed: %s", exc)
            else:
                if expired:
                    log.info("expired %d unanswered human tasks (refunded)", expired)
            await asyncio.sleep(min(ttl_s / 4, 30.0))

    def spawn(self, coro: Any) -> None:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Cancel background work and close the backend."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.backend.aclose()
