"""SQLite store of the oracle service (WAL mode; every write is one ``BEGIN IMMEDIATE`` transaction)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coact_verl.oracle.backends.base import BackendError, LabelQuery, LabelResult
from coact_verl.oracle.service.annotator_store import AnnotatorOps, token_hash
from coact_verl.oracle.service.comparison_store import COMPARISON_SCHEMA, ComparisonOps
from coact_verl.oracle.service.connections import Connections
from coact_verl.oracle.service.feedback_store import FEEDBACK_SCHEMA, FeedbackOps, migrate_feedback
from coact_verl.oracle.service.run_store import (
    DEFAULT_RUN,
    QUERIES_INDEX,
    QUERIES_TABLE,
    RUN_SCHEMA,
    CandidateLimit,
    RunNotFound,
    RunOps,
    migrate_runs,
)
from coact_verl.oracle.service.text_store import TEXT_SCHEMA, decode_candidates, encode_candidates

__all__ = [
    "DEFAULT_RUN",
    "Budget",
    "CandidateLimit",
    "KeyConflict",
    "Reservation",
    "RunNotFound",
    "Store",
    "check_label",
    "token_hash",
]
# ``budget`` holds the budget every new run starts with (``spent`` there is unused since runs own their budgets).
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS budget (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER, per_step INTEGER,
    spent INTEGER NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO budget (id, total, per_step, spent) VALUES (1, NULL, NULL, 0);
CREATE TABLE IF NOT EXISTS gold (prompt_id TEXT PRIMARY KEY, answer TEXT NOT NULL);
{QUERIES_TABLE};
{QUERIES_INDEX};
CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id INTEGER NOT NULL UNIQUE REFERENCES queries (id), answer TEXT, correct TEXT NOT NULL,
    source TEXT NOT NULL, annotator TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
COMMIT;
"""
_LABEL_FIELDS = tuple("id query_id key prompt_id prompt task step answer correct source annotator created_at".split())
_CHARGED = ("labeled", "pending", "labeling")  # other statuses are re-evaluated when the same key comes again
# One statement for everything reserve() reads: the run's budget, step and cap, the key's row, the prompt's gold
# answer and what the run's current step has spent.
_LOOKUP = (
    "SELECT r.total, r.per_step, r.spent, r.step, r.max_candidates, q.id, q.status, q.charged,"
    " (SELECT answer FROM gold WHERE prompt_id = ?),"
    " (SELECT spent FROM run_step_spent s WHERE s.run_id = r.id AND s.step = r.step)"
    " FROM runs r LEFT JOIN queries q ON q.run_id = r.id AND q.key = ? WHERE r.id = ?"
)


class KeyConflict(BackendError):
    """A query key was charged before for another body (HTTP 409; the stored query is left as it was)."""


@dataclass(frozen=True)
class Budget:
    """Label budget: ``total``/``per_step`` are ``None`` when unbounded; ``spent`` counts charged queries."""

    total: int | None
    per_step: int | None
    spent: int

    @property
    def remaining(self) -> int | None:
        """Labels left, ``None`` when unbounded."""
        return None if self.total is None else max(0, self.total - self.spent)


@dataclass(frozen=True)
class Reservation:
    """Outcome of :meth:`Store.reserve`; ``fresh`` is true when this call charged the budget."""

    query: LabelQuery
    status: str
    fresh: bool
    label: LabelResult | None
    budget: Budget


def check_label(label: LabelResult, query: LabelQuery) -> None:
    """Reject a label whose verdict count differs from the candidate count."""
    if len(label.correct) != len(query.candidates):
        raise ValueError(f"backend gave {len(label.correct)} verdicts for {len(query.candidates)} candidates")


class Store(Connections, RunOps, AnnotatorOps, FeedbackOps, ComparisonOps):
    """The oracle's data: runs and their budgets, gold, queries, labels, annotators, votes and edits (see
    :class:`Connections`).

    Args:
        path: database file (created with its tables if missing; an older layout is migrated).
        synchronous: SQLite ``synchronous`` pragma; ``NORMAL`` survives process crashes, ``FULL`` also power loss.
        busy_timeout_s: how long a writer waits for the lock held by another connection, in seconds.
        checkpoint_every_s: run WAL checkpoints in a background thread this often, in seconds (``None``: let
            SQLite checkpoint inside the committing request, with its fsync).
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        checkpoint_every_s: float | None = 0.25,
    ) -> None:
        super().__init__(path, synchronous, busy_timeout_s, checkpoint_every_s)
        self.conn.executescript(RUN_SCHEMA)
        self.conn.executescript(_SCHEMA)
        migrate_runs(self.conn)
        self.conn.executescript(FEEDBACK_SCHEMA)
        self.conn.executescript(COMPARISON_SCHEMA)
        self.conn.executescript(TEXT_SCHEMA)
        migrate_feedback(self.conn)

    # -- budget and gold -------------------------------------------------------------------------------------------
    @staticmethod
    def _budget(conn: sqlite3.Connection, run_id: int = DEFAULT_RUN) -> Budget:
        row = conn.execute("SELECT total, per_step, spent FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"unknown run {run_id}: open it with POST /v1/runs (the trainer's handshake does)")
        return Budget(*row)

    def budget(self, run_id: int = DEFAULT_RUN) -> Budget:
        """Current budget of a run."""
        return self._budget(self.conn, run_id)

    def set_budget(
        self,
        total: int | None,
        per_step: int | None = None,
        *,
        keep_per_step: bool = False,
        run_id: int | None = None,
    ) -> Budget:
        """Set the total (and per-step) label budget of run ``run_id``; labels already spent stay spent.

        ``run_id`` ``None`` sets the service's budget: the one every new run starts with, and the default run's.
        """
        with self._tx() as conn:
            if run_id is None:
                conn.execute("UPDATE budget SET total = ? WHERE id = 1", (total,))
                if not keep_per_step:
                    conn.execute("UPDATE budget SET per_step = ? WHERE id = 1", (per_step,))
            run = DEFAULT_RUN if run_id is None else run_id
            self._budget(conn, run)  # raises for an unknown run
            conn.execute("UPDATE runs SET total = ? WHERE id = ?", (total, run))
            if not keep_per_step:
                conn.execute("UPDATE runs SET per_step = ? WHERE id = ?", (per_step, run))
                # Per-step counts are kept only while a per-step budget is set: rebuild them from the queries.
                conn.execute("DELETE FROM run_step_spent WHERE run_id = ?", (run,))
                conn.execute(
                    "INSERT INTO run_step_spent (run_id, step, spent) SELECT run_id, charge_step, COUNT(*)"
                    " FROM queries WHERE run_id = ? AND charged = 1 GROUP BY charge_step",
                    (run,),
                )
            return self._budget(conn, run)

    def put_gold(self, answers: Mapping[str, str]) -> int:
        """Insert or replace hidden gold answers; returns how many changed. Answers already stored as given are
        not written again (no write transaction at all when nothing changed: a restart on a full disk works)."""
        stored = dict(self.conn.execute("SELECT prompt_id, answer FROM gold").fetchall()) if answers else {}
        changed = [(k, v) for k, v in answers.items() if stored.get(k) != v]
        if not changed:
            return 0
        with self._tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO gold (prompt_id, answer) VALUES (?, ?)", changed)
            return len(changed)

    def gold_count(self) -> int:
        """Number of prompts with a gold answer."""
        count: int = self.conn.execute("SELECT COUNT(*) FROM gold").fetchone()[0]
        return count

    # -- queries and labels ----------------------------------------------------------------------------------------
    def reserve(
        self,
        query: LabelQuery,
        *,
        needs_gold: bool,
        initial: str,
        labeller: Callable[[LabelQuery], LabelResult | None] | None = None,
        max_candidates: int | None = None,
    ) -> Reservation:
        """Record ``query`` in its run and charge the run's budget, atomically and at most once per key.

        A query with more candidates than the run's cap (``max_candidates`` when the run sets none) raises
        :class:`CandidateLimit`, one naming an unknown run :class:`RunNotFound`; neither writes anything. A known key
        in a charged state is returned as stored (nothing is charged). Otherwise the query becomes ``over_budget``
        (total or current step's budget spent; not charged), ``no_gold`` (needs gold, none stored) or ``initial``
        (``labeling``/``pending``); both of the last two charge one label, at the run's current step. ``no_gold``
        is charged because it tells the caller whether a prompt has a gold answer; the same key sent again once
        gold is stored is labelled under that charge. A ``labeller`` (fast, synchronous) labels a charged query
        inside the same transaction: charge and label are then written together or not at all (an exception from
        it rolls everything back and is raised as :class:`BackendError`); when it returns ``None`` the query stays
        ``initial``, to be labelled later.
        """
        with self._tx() as conn:
            return self._reserve(conn, query, needs_gold, initial, labeller, max_candidates)

    def reserve_many(
        self,
        queries: Sequence[LabelQuery],
        *,
        needs_gold: bool,
        initial: str,
        labeller: Callable[[LabelQuery], LabelResult | None] | None = None,
        max_candidates: int | None = None,
    ) -> list[Reservation | BackendError]:
        """:meth:`reserve` for several queries in one transaction (one commit), in order.

        A query that fails its checks or whose ``labeller`` fails gets its :class:`BackendError` in the result list
        and leaves no trace: both happen before that query writes anything. Any other error rolls the whole batch
        back.
        """
        out: list[Reservation | BackendError] = []
        with self._tx() as conn:
            for query in queries:
                try:
                    out.append(self._reserve(conn, query, needs_gold, initial, labeller, max_candidates))
                except BackendError as exc:
                    out.append(exc)
        return out

    def _reserve(
        self,
        conn: sqlite3.Connection,
        query: LabelQuery,
        needs_gold: bool,
        initial: str,
        labeller: Callable[[LabelQuery], LabelResult | None] | None,
        max_candidates: int | None,
    ) -> Reservation:
        """One query of :meth:`reserve`, inside the caller's transaction."""
        row = conn.execute(_LOOKUP, (query.prompt_id, query.key, query.run_id)).fetchone()
        if row is None:
            raise RunNotFound(f"unknown run {query.run_id}: open it with POST /v1/runs (the trainer's handshake does)")
        total, per_step, spent, run_step, run_cap, row_id, row_status, row_charged, gold, step_spent = row
        cap = min((c for c in (run_cap, max_candidates) if c is not None), default=None)  # the lower of both
        if cap is not None and len(query.candidates) > cap:
            raise CandidateLimit(
                f"{len(query.candidates)} candidates, but this run admits at most {cap} per query (one per sampled"
                " response: the samples per prompt given at the handshake, or the service's --max-candidates)"
            )
        budget = Budget(total, per_step, spent)
        if row_status in _CHARGED:
            self._check_same_body(conn, row_id, query)
            label = self._label(conn, row_id) if row_status == "labeled" else None
            return Reservation(self._query(conn, row_id), row_status, False, label, budget)
        paid = row_status == "no_gold" and bool(row_charged)  # its charge carries over to this attempt
        if paid:
            self._check_same_body(conn, row_id, query)
            if needs_gold and gold is None:
                return Reservation(self._query(conn, row_id), "no_gold", False, None, budget)
        if paid:
            status = initial
        elif total is not None and spent >= total:
            status = "over_budget"
        elif per_step is not None and (step_spent or 0) >= per_step:
            status = "over_budget"
        elif needs_gold and gold is None:
            status = "no_gold"
        else:
            status = initial
        charge_now = not paid and status in (initial, "no_gold")
        cands = tuple(query.candidates)
        stored = LabelQuery(
            row_id or 0, query.key, query.prompt_id, query.prompt, query.task, query.step, cands, gold, query.run_id
        )
        label = None
        if status == initial and labeller is not None:
            try:
                label = labeller(stored)
                if label is not None:
                    check_label(label, stored)
            except Exception as exc:  # noqa: BLE001 - the backend's failure; this query has written nothing yet
                raise BackendError(f"{type(exc).__name__}: {exc}") from exc
            if label is not None:
                status = "labeled"
        cands_json = encode_candidates(cands, conn)
        values = (query.prompt_id, query.prompt, query.task, query.step, cands_json, status)
        if row_id is None:
            row_id = conn.execute(
                "INSERT INTO queries (prompt_id, prompt, task, step, candidates, status, charged, charge_step,"
                " run_id, key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, int(charge_now), run_step, query.run_id, query.key, time.time()),
            ).lastrowid
        elif charge_now:
            conn.execute(
                "UPDATE queries SET prompt_id = ?, prompt = ?, task = ?, step = ?, candidates = ?, status = ?,"
                " charged = 1, charge_step = ? WHERE id = ?",
                (*values, run_step, row_id),
            )
        else:  # not charged now: over budget, or labelled under the charge of an earlier no_gold answer
            conn.execute(
                "UPDATE queries SET prompt_id = ?, prompt = ?, task = ?, step = ?, candidates = ?, status = ?"
                " WHERE id = ?",
                (*values, row_id),
            )
        if charge_now:
            self._charge(conn, query.run_id, run_step, +1, per_step is not None)
            budget = Budget(total, per_step, spent + 1)
        if label is not None:
            self._insert_label(conn, row_id, label)
        if stored.query_id != row_id:
            stored = LabelQuery(
                row_id, query.key, query.prompt_id, query.prompt, query.task, query.step, cands, gold, query.run_id
            )
        return Reservation(stored, status, charge_now, label, budget)

    @staticmethod
    def _check_same_body(conn: sqlite3.Connection, row_id: int, query: LabelQuery) -> None:
        """Raise :class:`KeyConflict` when a charged key comes back with another prompt, task, step or candidates."""
        stored = conn.execute(
            "SELECT prompt_id, prompt, task, step, candidates FROM queries WHERE id = ?", (row_id,)
        ).fetchone()
        cands = encode_candidates(query.candidates)
        if stored != (query.prompt_id, query.prompt, query.task, query.step, cands):
            raise KeyConflict(f"key {query.key[:64]!r} was used before with another body")

    @staticmethod
    def _charge(conn: sqlite3.Connection, run_id: int, step: int, delta: int, per_step: bool) -> None:
        """Add ``delta`` labels to a run's spent budget (and to its ``step``'s count while a per-step cap is set)."""
        conn.execute("UPDATE runs SET spent = spent + ? WHERE id = ?", (delta, run_id))
        if per_step:
            conn.execute(
                "INSERT INTO run_step_spent (run_id, step, spent) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, step) DO UPDATE SET spent = spent + ?",
                (run_id, step, delta, delta),
            )

    @classmethod
    def _refund(cls, conn: sqlite3.Connection, query_id: int) -> None:
        """Give a charged query's label back to its run (and to the step it was charged to)."""
        run_id, step = conn.execute("SELECT run_id, charge_step FROM queries WHERE id = ?", (query_id,)).fetchone()
        cls._charge(conn, run_id, step, -1, cls._budget(conn, run_id).per_step is not None)

    @classmethod
    def _void(cls, conn: sqlite3.Connection, query_id: int) -> None:
        """Fail a charged, unlabelled query and refund it: its key may be sent again."""
        cls._refund(conn, query_id)
        conn.execute("UPDATE queries SET status = 'failed', charged = 0, assigned_to = NULL WHERE id = ?", (query_id,))

    @staticmethod
    def _query(conn: sqlite3.Connection, query_id: int) -> LabelQuery:
        row = conn.execute(
            "SELECT q.key, q.prompt_id, q.prompt, q.task, q.step, q.candidates, g.answer, q.run_id FROM queries q"
            " LEFT JOIN gold g ON g.prompt_id = q.prompt_id WHERE q.id = ?",
            (query_id,),
        ).fetchone()
        cands = decode_candidates(conn, row[5])
        return LabelQuery(query_id, row[0], row[1], row[2], row[3], row[4], cands, row[6], row[7])

    @staticmethod
    def _label(conn: sqlite3.Connection, query_id: int) -> LabelResult | None:
        row = conn.execute(
            "SELECT answer, correct, source, annotator FROM labels WHERE query_id = ?", (query_id,)
        ).fetchone()
        return None if row is None else LabelResult(tuple(json.loads(row[1])), row[0], row[2], row[3])

    @staticmethod
    def _insert_label(conn: sqlite3.Connection, query_id: int, result: LabelResult) -> None:
        values = (query_id, result.answer, json.dumps(list(result.correct)), result.source, result.annotator)
        conn.execute(
            "INSERT INTO labels (query_id, answer, correct, source, annotator, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (*values, time.time()),
        )

    def finish(self, query_id: int, result: LabelResult, *, annotator_id: int | None = None) -> LabelResult | None:
        """Store the label of a charged query (first label wins); ``None`` when the query holds no charge.

        With ``annotator_id``, the annotator must hold the query's lease.
        """
        with self._tx() as conn:
            return self._finish(conn, query_id, result, annotator_id)

    def finish_many(self, labels: Sequence[tuple[int, LabelResult]]) -> list[LabelResult | None]:
        """:meth:`finish` for several ``(query_id, label)`` pairs in one transaction, in order."""
        with self._tx() as conn:
            return [self._finish(conn, query_id, result, None) for query_id, result in labels]

    def _finish(
        self, conn: sqlite3.Connection, query_id: int, result: LabelResult, annotator_id: int | None
    ) -> LabelResult | None:
        existing = self._label(conn, query_id)
        if existing is not None:
            return existing
        row = conn.execute("SELECT status FROM queries WHERE id = ?", (query_id,)).fetchone()
        if row is None or row[0] not in ("labeling", "pending"):
            return None
        if annotator_id is not None and not self.holds_lease(conn, query_id, annotator_id):
            return None
        self._insert_label(conn, query_id, result)
        conn.execute("UPDATE queries SET status = 'labeled' WHERE id = ?", (query_id,))
        return result

    def fail(self, query_id: int) -> None:
        """Refund a query whose automatic labelling failed; the same key may be sent again."""
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM queries WHERE id = ?", (query_id,)).fetchone()
            if row is not None and row[0] == "labeling" and self._label(conn, query_id) is None:
                self._void(conn, query_id)

    def status(self, query_id: int) -> str | None:
        """Stored status of a query."""
        row = self.conn.execute("SELECT status FROM queries WHERE id = ?", (query_id,)).fetchone()
        return None if row is None else row[0]

    def unfinished(self, limit: int = 1000, after_id: int = 0) -> list[LabelQuery]:
        """Charged queries left in ``labeling`` (the service stopped between charge and label), in id order from
        ``after_id`` on: page with the last id returned."""
        conn = self.conn
        rows = conn.execute(
            "SELECT id FROM queries WHERE status = 'labeling' AND id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()
        return [self._query(conn, r[0]) for r in rows]

    def labels_since(
        self, since_id: int, limit: int, max_chars: int | None = None, run_id: int = DEFAULT_RUN
    ) -> list[dict[str, Any]]:
        """Labels of run ``run_id`` with id > ``since_id`` in id order (ids follow commit order), with their query's
        prompt and task: at most ``limit``, and no more once their texts reach ``max_chars`` characters (always at
        least one)."""
        cursor = self.conn.execute(
            "SELECT l.id, l.query_id, q.key, q.prompt_id, q.prompt, q.task, q.step, l.answer, l.correct, l.source,"
            " l.annotator, l.created_at FROM labels l JOIN queries q ON q.id = l.query_id WHERE l.id > ?"
            " AND q.run_id = ? ORDER BY l.id LIMIT ?",
            (since_id, run_id, limit),
        )
        rows, size = [], 0
        for row in cursor:
            rows.append(row)
            size += len(row[2]) + len(row[3]) + len(row[4]) + len(row[7] or "") + len(row[8])
            if max_chars is not None and size >= max_chars:
                break
        cursor.close()
        out = [dict(zip(_LABEL_FIELDS, r, strict=True)) for r in rows]
        for item in out:
            item["correct"] = json.loads(item["correct"])
        return out
