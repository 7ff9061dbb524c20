"""Comparison votes and coactive edits (mixed into :class:`~coact_verl.oracle.service.db.Store`).

Both live in one ``feedback`` table, so that one id sequence gives their commit order. For an edit,
``response_a`` holds the original and ``response_b`` the edited text; ``stronger``/``picked``/``better`` are
``NULL``. Idempotency keys are scoped per annotator and kind: a key replayed by the same annotator returns the
stored record, and another annotator's key can neither collide with it nor reveal it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coact_verl.feedback.pairs_from_votes import EditRecord, VoteRecord
from coact_verl.oracle.service.comparison_store import UnknownTicket, VoteConflict

FEEDBACK_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('vote', 'edit')), annotator INTEGER NOT NULL REFERENCES annotators (id),
    key TEXT NOT NULL, stronger TEXT, picked TEXT, better TEXT, created_at REAL NOT NULL, prompt_id TEXT NOT NULL,
    task TEXT NOT NULL, prompt TEXT NOT NULL, response_a TEXT NOT NULL, response_b TEXT NOT NULL,
    UNIQUE (annotator, kind, key));
CREATE INDEX IF NOT EXISTS feedback_votes ON feedback (kind, annotator, stronger, picked, better);
COMMIT;
"""
# Row order of every read and write; ``_put`` takes the last eight as its ``values``.
_COLUMNS = (
    "id, kind, annotator, key, created_at, stronger, picked, better, prompt_id, task, prompt, response_a, response_b"
)
_INSERT = f"INSERT INTO feedback ({_COLUMNS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Per-annotator counts of the EM's four vote kinds; an index-only scan of ``feedback_votes``.
_COUNTS = (
    "SELECT annotator, SUM(better IS NULL AND picked = stronger), SUM(better IS NULL AND picked <> stronger),"
    " SUM(better IS NOT NULL AND picked = better), SUM(better IS NOT NULL AND picked <> better)"
    " FROM feedback WHERE kind = 'vote' GROUP BY annotator ORDER BY annotator"
)

# Columns added after the first release: (table, column, declaration).
_ADDED_COLUMNS = (("feedback", "ticket", "TEXT"), ("annotators", "trust", "REAL"), ("annotators", "revoked_at", "REAL"))


def migrate_feedback(conn: sqlite3.Connection) -> None:
    """Add the columns that databases of earlier versions lack (one transaction; safe when run concurrently)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in _ADDED_COLUMNS:
            if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class StoredFeedback:
    """A vote or edit as stored; ``created`` is false when its key had been stored before (a replay)."""

    key: str
    created: bool
    created_at: float
    record: VoteRecord | EditRecord


def _record(row: tuple[Any, ...]) -> StoredFeedback:
    fid, kind, annotator, key, created_at, stronger, picked, better, prompt_id, task, prompt, first, second = row
    if kind == "vote":
        record: VoteRecord | EditRecord = VoteRecord(
            fid, annotator, prompt_id, prompt, task, first, second, stronger, picked, better
        )
    else:
        record = EditRecord(fid, annotator, prompt_id, prompt, task, first, second)
    return StoredFeedback(key, False, created_at, record)


class FeedbackOps:
    """Needs ``conn`` and ``_tx()`` from the store it is mixed into."""

    if TYPE_CHECKING:

        @property
        def conn(self) -> sqlite3.Connection: ...  # read-only on the store (one connection per thread)

    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    leased_comparison: Callable[[sqlite3.Connection, int, str], tuple[Any, ...] | None]

    @staticmethod
    def _put(
        conn: sqlite3.Connection,
        kind: str,
        annotator_id: int,
        key: str,
        values: tuple[Any, ...],
        ticket: str | None = None,
    ) -> StoredFeedback:
        row = conn.execute(
            f"SELECT {_COLUMNS}, ticket FROM feedback WHERE annotator = ? AND kind = ? AND key = ?",
            (annotator_id, kind, key),
        ).fetchone()
        if row is not None:
            if ticket != row[-1] or tuple(row[5:-1]) != values:
                raise VoteConflict(f"key {key[:64]!r} was stored with another body")
            return _record(row[:-1])
        new = (kind, annotator_id, key, time.time(), *values)
        fid = conn.execute(_INSERT, new).lastrowid
        if ticket is not None:
            conn.execute("UPDATE feedback SET ticket = ? WHERE id = ?", (ticket, fid))
        return dataclasses.replace(_record((fid, *new)), created=True)

    def put_votes(self, annotator_id: int, votes: Sequence[tuple[str, str, str]]) -> list[StoredFeedback]:
        """Store ``(key, ticket, picked)`` votes of one annotator in one transaction (all or none), at most once
        per key and once per ticket.

        The prompt, responses, ``stronger`` and ``better`` come from the comparison leased under ``ticket``. A key
        stored before with the same ticket and pick, or earlier in the same call, gives back the stored vote with
        ``created=False``; with another ticket or pick it raises :class:`VoteConflict`, as does a second key for a
        ticket already voted on. A ticket not leased to the annotator raises :class:`UnknownTicket`.
        """
        out = []
        with self._tx() as conn:
            for key, ticket, picked in votes:
                leased = self.leased_comparison(conn, annotator_id, ticket)
                if leased is None:
                    raise UnknownTicket(f"ticket {ticket[:64]!r} was not leased to this annotator")
                voted, prompt_id, prompt, task, response_a, response_b, stronger, better = leased
                values = (stronger, picked, better, prompt_id, task, prompt, response_a, response_b)
                known = conn.execute(
                    "SELECT 1 FROM feedback WHERE annotator = ? AND kind = 'vote' AND key = ?", (annotator_id, key)
                ).fetchone()
                if voted and known is None:
                    raise VoteConflict(f"ticket {ticket[:64]!r} was already voted on")
                out.append(self._put(conn, "vote", annotator_id, key, values, ticket))
                conn.execute("UPDATE comparison_leases SET voted = 1 WHERE ticket = ?", (ticket,))
        return out

    def put_edit(self, annotator_id: int, key: str, edit: EditRecord) -> StoredFeedback:
        """Store an edit of one annotator at most once per key (another body under that key: :class:`VoteConflict`)."""
        values = (None, None, None, edit.prompt_id, edit.task, edit.prompt, edit.original, edit.edited)
        with self._tx() as conn:
            return self._put(conn, "edit", annotator_id, key, values)

    def feedback_since(self, since_id: int, limit: int, max_bytes: int | None = None) -> list[VoteRecord | EditRecord]:
        """Votes and edits with id > ``since_id`` in id order (ids follow commit order): at most ``limit`` of
        them, and no more once their texts reach ``max_bytes`` characters (always at least one)."""
        cursor = self.conn.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
        )
        out, size = [], 0
        for row in cursor:
            out.append(_record(row).record)
            size += sum(len(t) for t in row[-3:])
            if max_bytes is not None and size >= max_bytes:
                break
        cursor.close()
        return out

    def vote_counts(self) -> dict[int, tuple[int, int, int, int]]:
        """Per annotator: (ordinary votes for the stronger side, ordinary for the weaker, control votes for the
        better side, control for the worse), the sufficient statistics of the attentiveness EM."""
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in self.conn.execute(_COUNTS).fetchall()}

    def annotator_names(self) -> dict[int, str]:
        """Name of every annotator."""
        return dict(self.conn.execute("SELECT id, name FROM annotators").fetchall())


__all__ = ["FEEDBACK_SCHEMA", "FeedbackOps", "StoredFeedback", "migrate_feedback"]
