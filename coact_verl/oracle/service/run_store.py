"""Runs: one namespace per training run inside a service (mixed into :class:`~coact_verl.oracle.service.db.Store`).

A run owns its budget (total, per step, spent), its step (set by the trainer's driver; every query is charged to
the step the run is at when it arrives, whatever ``step`` the query names), its cap on candidates per query, its
query keys and its label log. Run 1, ``default``, serves callers that name no run. Runs are opened by name
(``project/experiment``): a fresh run gets a new generation of the name, so it never inherits spent budget or
labels; a resumed run continues the newest generation.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coact_verl.oracle.backends.base import BackendError

DEFAULT_RUN = 1
RUN_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, generation INTEGER NOT NULL,
    total INTEGER, per_step INTEGER, spent INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0,
    max_candidates INTEGER, created_at REAL NOT NULL, UNIQUE (name, generation));
CREATE TABLE IF NOT EXISTS run_step_spent (run_id INTEGER NOT NULL, step INTEGER NOT NULL, spent INTEGER NOT NULL,
    PRIMARY KEY (run_id, step));
COMMIT;
"""


RUN_HEADER = "x-coact-run"  # the run a request belongs to (absent: the default run)


def run_from_header(value: str | bytes | None) -> int:
    """The run id a request names in its ``X-CoAct-Run`` header (``DEFAULT_RUN`` without one); raises
    :class:`RunNotFound` for a value that is no run id."""
    if value is None:
        return DEFAULT_RUN
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text.strip().isdigit() or len(text.strip()) > 15:
        raise RunNotFound(f"bad X-CoAct-Run header {text[:40]!r}: give a run id from POST /v1/runs")
    return int(text)


class RunNotFound(BackendError):
    """A request names a run the service does not hold (HTTP 404)."""


class CandidateLimit(BackendError):
    """A query has more candidates than its run admits (HTTP 422; nothing is charged or stored)."""


@dataclass(frozen=True)
class RunInfo:
    """A run: ``generation`` counts the fresh runs of ``name`` (1 for the first); ``step`` is the step its queries
    are charged to; ``max_candidates`` caps candidates per query (``None``: the service's cap)."""

    id: int
    name: str
    generation: int
    step: int
    max_candidates: int | None
    created_at: float


_RUN_FIELDS = "id, name, generation, step, max_candidates, created_at"


class RunOps:
    """Needs ``conn``, ``_tx()`` and ``_void(conn, id)`` from the store it is mixed into."""

    if TYPE_CHECKING:

        @property
        def conn(self) -> sqlite3.Connection: ...  # read-only on the store (one connection per thread)

    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _void: Callable[[sqlite3.Connection, int], None]

    def open_run(self, name: str, *, resume: bool, max_candidates: int | None = None) -> tuple[RunInfo, bool]:
        """Open run ``name``: with ``resume`` its newest generation (a new one if there is none), else a new
        generation with the service's default budget. Returns ``(run, resumed)``. ``max_candidates`` sets the run's
        cap on candidates per query (kept as stored when ``None``).

        A new generation supersedes the older ones: their pending human-queue queries fail and are refunded, so
        annotators are not served prompts of a run nobody reads any more."""
        with self._tx() as conn:
            newest = conn.execute(
                f"SELECT {_RUN_FIELDS} FROM runs WHERE name = ? ORDER BY generation DESC LIMIT 1", (name,)
            ).fetchone()
            if resume and newest is not None:
                run_id, resumed = newest[0], True
                if max_candidates is not None:
                    conn.execute("UPDATE runs SET max_candidates = ? WHERE id = ?", (max_candidates, run_id))
            else:
                total, per_step = conn.execute("SELECT total, per_step FROM budget WHERE id = 1").fetchone()
                generation = 1 if newest is None else newest[2] + 1
                if newest is not None:
                    self._fail_pending_of(conn, name)
                run_id = conn.execute(
                    "INSERT INTO runs (name, generation, total, per_step, max_candidates, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, generation, total, per_step, max_candidates, time.time()),
                ).lastrowid
                resumed = False
            return self._run_info(conn, int(run_id)), resumed

    def _fail_pending_of(self, conn: sqlite3.Connection, name: str) -> int:
        """Fail and refund every pending query of the runs named ``name``; returns how many."""
        rows = conn.execute(
            "SELECT q.id FROM queries q JOIN runs r ON r.id = q.run_id WHERE r.name = ? AND q.status = 'pending'",
            (name,),
        ).fetchall()
        for (query_id,) in rows:  # pending queries are charged (see expire_pending)
            self._void(conn, query_id)
        return len(rows)

    def run(self, run_id: int) -> RunInfo:
        """The run ``run_id``; raises :class:`RunNotFound`."""
        return self._run_info(self.conn, run_id)

    @staticmethod
    def _run_info(conn: sqlite3.Connection, run_id: int) -> RunInfo:
        row = conn.execute(f"SELECT {_RUN_FIELDS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"unknown run {run_id}: open it with POST /v1/runs (the trainer's handshake does)")
        return RunInfo(*row)

    def set_step(self, run_id: int, step: int) -> RunInfo:
        """Move run ``run_id`` to ``step``: queries arriving from now on are charged to it (the per-step cap counts
        them there)."""
        with self._tx() as conn:
            if conn.execute("UPDATE runs SET step = ? WHERE id = ?", (step, run_id)).rowcount == 0:
                raise RunNotFound(f"unknown run {run_id}")
            return self._run_info(conn, run_id)


def migrate_runs(conn: sqlite3.Connection) -> None:
    """Bring a database of the single-namespace layout into the run layout (once; a no-op afterwards).

    The old budget becomes run 1 (``default``) and every query, its key now unique within its run, belongs to it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT COUNT(*) FROM runs WHERE id = ?", (DEFAULT_RUN,)).fetchone()[0] == 0:
            total, per_step, spent = conn.execute("SELECT total, per_step, spent FROM budget WHERE id = 1").fetchone()
            conn.execute(
                "INSERT INTO runs (id, name, generation, total, per_step, spent, created_at)"
                " VALUES (?, 'default', 1, ?, ?, ?, ?)",
                (DEFAULT_RUN, total, per_step, spent, time.time()),
            )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(queries)")}
        if "run_id" not in columns:
            conn.execute(QUERIES_TABLE.replace("queries (", "queries_new (", 1))
            conn.execute(
                "INSERT INTO queries_new (id, run_id, key, prompt_id, prompt, task, step, charge_step, candidates,"
                " status, charged, assigned_to, assigned_at, created_at) SELECT id, ?, key, prompt_id, prompt, task,"
                " step, step, candidates, status, charged, assigned_to, assigned_at, created_at FROM queries",
                (DEFAULT_RUN,),
            )
            conn.execute("DROP TABLE queries")
            conn.execute("ALTER TABLE queries_new RENAME TO queries")
            conn.execute(
                "INSERT INTO run_step_spent (run_id, step, spent) SELECT run_id, charge_step, COUNT(*) FROM queries"
                " WHERE charged = 1 GROUP BY run_id, charge_step"
            )
        conn.execute(QUERIES_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# ``step`` is what the caller sent (part of the body a key stands for); ``charge_step`` the run's step it was
# charged to.
QUERIES_TABLE = """CREATE TABLE IF NOT EXISTS queries (id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL DEFAULT 1, key TEXT NOT NULL, prompt_id TEXT NOT NULL, prompt TEXT NOT NULL,
    task TEXT NOT NULL, step INTEGER NOT NULL, charge_step INTEGER NOT NULL DEFAULT 0, candidates TEXT NOT NULL,
    status TEXT NOT NULL, charged INTEGER NOT NULL DEFAULT 0, assigned_to INTEGER, assigned_at REAL,
    created_at REAL NOT NULL, UNIQUE (run_id, key))"""
QUERIES_INDEX = "CREATE INDEX IF NOT EXISTS queries_by_status ON queries (status, id)"

__all__ = [
    "DEFAULT_RUN",
    "QUERIES_INDEX",
    "QUERIES_TABLE",
    "RUN_HEADER",
    "RUN_SCHEMA",
    "CandidateLimit",
    "RunInfo",
    "RunNotFound",
    "RunOps",
    "migrate_runs",
    "run_from_header",
]
