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
from coact_verl.oracle.service.text_store import TEXT_SCHEMA, decode_candidates, encode_candidates

__all__ = ["Budget", "KeyConflict", "Reservation", "Store", "check_label", "token_hash"]
_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS budget (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER, per_step INTEGER,
    spent INTEGER NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO budget (id, total, per_step, spent) VALUES (1, NULL, NULL, 0);
CREATE TABLE IF NOT EXISTS step_spent (step INTEGER PRIMARY KEY, spent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gold (prompt_id TEXT PRIMARY KEY, answer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
    prompt_id TEXT NOT NULL, prompt TEXT NOT NULL, task TEXT NOT NULL, step INTEGER NOT NULL,
    candidates TEXT NOT NULL, status TEXT NOT NULL, charged INTEGER NOT NULL DEFAULT 0,
    assigned_to INTEGER, assigned_at REAL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS queries_by_status ON queries (status, id);
CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id INTEGER NOT NULL UNIQUE REFERENCES queries (id), answer TEXT, correct TEXT NOT NULL,
    source TEXT NOT NULL, annotator TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
COMMIT;
"""
_LABEL_FIELDS = tuple("id query_id key prompt_id prompt task step answer correct source annotator created_at".split())
_CHARGED = ("labeled", "pending", "labeling")  # other statuses are re-evaluated when the same key comes again
# One statement for everything reserve() reads: budget, the key's row, the prompt's gold answer.
_LOOKUP = (
    "SELECT b.total, b.per_step, b.spent, q.id, q.status, (SELECT answer FROM gold WHERE prompt_id = ?)"
    " FROM budget b LEFT JOIN queries q ON q.key = ? WHERE b.id = 1"
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


class Store(Connections, AnnotatorOps, FeedbackOps, ComparisonOps):
    """The oracle's data: budget, gold, queries, labels, annotators, votes and edits (see :class:`Connections`).

    Args:
        path: database file (created with its tables if missing).
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
        self.conn.executescript(_SCHEMA)
        self.conn.executescript(FEEDBACK_SCHEMA)
        self.conn.executescript(COMPARISON_SCHEMA)
        self.conn.executescript(TEXT_SCHEMA)
        migrate_feedback(self.conn)

    # -- budget and gold -------------------------------------------------------------------------------------------
    @staticmethod
    def _budget(conn: sqlite3.Connection) -> Budget:
        return Budget(*conn.execute("SELECT total, per_step, spent FROM budget WHERE id = 1").fetchone())

    def budget(self) -> Budget:
        """Current budget."""
        return self._budget(self.conn)

    def set_budget(self, total: int | None, per_step: int | None = None, *, keep_per_step: bool = False) -> Budget:
        """Set the total (and per-step) label budget; labels already spent stay spent."""
        with self._tx() as conn:
            conn.execute("UPDATE budget SET total = ? WHERE id = 1", (total,))
            if not keep_per_step:
                conn.execute("UPDATE budget SET per_step = ? WHERE id = 1", (per_step,))
                # Per-step counts are kept only while a per-step budget is set: rebuild them from the queries.
                conn.execute("DELETE FROM step_spent")
                conn.execute(
                    "INSERT INTO step_spent (step, spent) SELECT step, COUNT(*) FROM queries WHERE charged = 1"
                    " GROUP BY step"
                )
            return self._budget(conn)

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
        return self.conn.execute("SELECT COUNT(*) FROM gold").fetchone()[0]

    # -- queries and labels ----------------------------------------------------------------------------------------
    def reserve(
        self,
        query: LabelQuery,
        *,
        needs_gold: bool,
        initial: str,
        labeller: Callable[[LabelQuery], LabelResult | None] | None = None,
    ) -> Reservation:
        """Record ``query`` and charge the budget, atomically and at most once per key.

        A known key in a charged state is returned as stored (nothing is charged). Otherwise the query becomes
        ``no_gold`` (needs gold, none stored), ``over_budget`` (total or per-step budget spent) or ``initial``
        (``labeling``/``pending``), the last one charging one label. A ``labeller`` (fast, synchronous) labels a
        charged query inside the same transaction: charge and label are then written together or not at all
        (an exception from it rolls everything back and is raised as :class:`BackendError`); when it returns
        ``None`` the query stays ``initial``, to be labelled later.
        """
        with self._tx() as conn:
            return self._reserve(conn, query, needs_gold, initial, labeller)

    def reserve_many(
        self,
        queries: Sequence[LabelQuery],
        *,
        needs_gold: bool,
        initial: str,
        labeller: Callable[[LabelQuery], LabelResult | None] | None = None,
    ) -> list[Reservation | BackendError]:
        """:meth:`reserve` for several queries in one transaction (one commit), in order.

        A query whose ``labeller`` fails gets its :class:`BackendError` in the result list and leaves no trace:
        the labeller runs before that query writes anything. Any other error rolls the whole batch back.
        """
        out: list[Reservation | BackendError] = []
        with self._tx() as conn:
            for query in queries:
                try:
                    out.append(self._reserve(conn, query, needs_gold, initial, labeller))
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
    ) -> Reservation:
        """One query of :meth:`reserve`, inside the caller's transaction."""
        total, per_step, spent, row_id, row_status, gold = conn.execute(
            _LOOKUP, (query.prompt_id, query.key)
        ).fetchone()
        budget = Budget(total, per_step, spent)
        if row_status in _CHARGED:
            self._check_same_body(conn, row_id, query)
            label = self._label(conn, row_id) if row_status == "labeled" else None
            return Reservation(self._query(conn, row_id), row_status, False, label, budget)
        if needs_gold and gold is None:
            status = "no_gold"
        elif total is not None and spent >= total:
            status = "over_budget"
        elif per_step is not None and self._step_spent(conn, query.step) >= per_step:
            status = "over_budget"
        else:
            status = initial
        charged = status == initial
        cands = tuple(query.candidates)
        stored = LabelQuery(row_id or 0, query.key, query.prompt_id, query.prompt, query.task, query.step, cands, gold)
        label = None
        if charged and labeller is not None:
            try:
                label = labeller(stored)
                if label is not None:
                    check_label(label, stored)
            except Exception as exc:  # noqa: BLE001 - the backend's failure; this query has written nothing yet
                raise BackendError(f"{type(exc).__name__}: {exc}") from exc
            if label is not None:
                status = "labeled"
        cands_json = encode_candidates(cands, conn)
        values = (query.prompt_id, query.prompt, query.task, query.step, cands_json, status, int(charged))
        if row_id is None:
            row_id = conn.execute(
                "INSERT INTO queries (prompt_id, prompt, task, step, candidates, status, charged, key, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, query.key, time.time()),
            ).lastrowid
        else:
            conn.execute(
                "UPDATE queries SET prompt_id = ?, prompt = ?, task = ?, step = ?, candidates = ?, status = ?,"
                " charged = ? WHERE id = ?",
                (*values, row_id),
            )
        if charged:
            self._charge(conn, query.step, +1, per_step is not None)
            budget = Budget(total, per_step, spent + 1)
        if label is not None:
            self._insert_label(conn, row_id, label)
        if stored.query_id != row_id:
            stored = LabelQuery(row_id, query.key, query.prompt_id, query.prompt, query.task, query.step, cands, gold)
        return Reservation(stored, status, charged, label, budget)

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
    def _step_spent(conn: sqlite3.Connection, step: int) -> int:
        row = conn.execute("SELECT spent FROM step_spent WHERE step = ?", (step,)).fetchone()
        return 0 if row is None else row[0]

    @staticmethod
    def _charge(conn: sqlite3.Connection, step: int, delta: int, per_step: bool) -> None:
        conn.execute("UPDATE budget SET spent = spent + ? WHERE id = 1", (delta,))
        if per_step:
            conn.execute(
                "INSERT INTO step_spent (step, spent) VALUES (?, ?) ON CONFLICT (step) DO UPDATE SET spent = spent + ?",
                (step, delta, delta),
            )

    @staticmethod
    def _query(conn: sqlite3.Connection, query_id: int) -> LabelQuery:
        row = conn.execute(
            "SELECT q.key, q.prompt_id, q.prompt, q.task, q.step, q.candidates, g.answer FROM queries q"
            " LEFT JOIN gold g ON g.prompt_id = q.prompt_id WHERE q.id = ?",
            (query_id,),
        ).fetchone()
        cands = decode_candidates(conn, row[5])
        return LabelQuery(query_id, row[0], row[1], row[2], row[3], row[4], cands, row[6])

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
            row = conn.execute("SELECT status, step FROM queries WHERE id = ?", (query_id,)).fetchone()
            if row is not None and row[0] == "labeling" and self._label(conn, query_id) is None:
                conn.execute("UPDATE queries SET status = 'failed', charged = 0 WHERE id = ?", (query_id,))
                self._charge(conn, row[1], -1, self._budget(conn).per_step is not None)

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

    def labels_since(self, since_id: int, limit: int, max_chars: int | None = None) -> list[dict[str, Any]]:
        """Labels with id > ``since_id`` in id order (ids follow commit order), with their query's prompt and task:
        at most ``limit``, and no more once their texts reach ``max_chars`` characters (always at least one)."""
        cursor = self.conn.execute(
            "SELECT l.id, l.query_id, q.key, q.prompt_id, q.prompt, q.task, q.step, l.answer, l.correct, l.source,"
            " l.annotator, l.created_at FROM labels l JOIN queries q ON q.id = l.query_id WHERE l.id > ?"
            " ORDER BY l.id LIMIT ?",
            (since_id, limit),
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
