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

from coact_verl.feedback.pairs_from_votes import EditRecord, VoteRecord

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


@dataclass(frozen=True)
class StoredFeedback:
    """A vote or edit as stored; ``created`` is false when its key had been stored before (a replay)."""

    key: str
    created: bool
    created_at: float
    record: VoteRecord | EditRecord


def _record(row: tuple) -> StoredFeedback:
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

    conn: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    @staticmethod
    def _put(conn: sqlite3.Connection, kind: str, annotator_id: int, key: str, values: tuple) -> StoredFeedback:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE annotator = ? AND kind = ? AND key = ?", (annotator_id, kind, key)
        ).fetchone()
        if row is not None:
            return _record(row)
        new = (kind, annotator_id, key, time.time(), *values)
        return dataclasses.replace(_record((conn.execute(_INSERT, new).lastrowid, *new)), created=True)

    def put_votes(self, annotator_id: int, votes: Sequence[tuple[str, VoteRecord]]) -> list[StoredFeedback]:
        """Store ``(key, vote)`` pairs of one annotator in one transaction (all or none), at most once per key.

        The votes' ``id`` and ``annotator`` are ignored. A key stored before, or earlier in the same call, gives
        back the stored vote with ``created=False``.
        """
        with self._tx() as conn:
            return [
                self._put(
                    conn,
                    "vote",
                    annotator_id,
                    key,
                    (v.stronger, v.picked, v.better, v.prompt_id, v.task, v.prompt, v.response_a, v.response_b),
                )
                for key, v in votes
            ]

    def put_edit(self, annotator_id: int, key: str, edit: EditRecord) -> StoredFeedback:
        """Store an edit of one annotator at most once per key (see :meth:`put_votes`)."""
        values = (None, None, None, edit.prompt_id, edit.task, edit.prompt, edit.original, edit.edited)
        with self._tx() as conn:
            return self._put(conn, "edit", annotator_id, key, values)

    def feedback_since(self, since_id: int, limit: int) -> list[VoteRecord | EditRecord]:
        """Votes and edits with id > ``since_id`` in id order (ids follow commit order)."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
        ).fetchall()
        return [_record(r).record for r in rows]

    def vote_counts(self) -> dict[int, tuple[int, int, int, int]]:
        """Per annotator: (ordinary votes for the stronger side, ordinary for the weaker, control votes for the
        better side, control for the worse), the sufficient statistics of the attentiveness EM."""
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in self.conn.execute(_COUNTS).fetchall()}

    def annotator_names(self) -> dict[int, str]:
        """Name of every annotator."""
        return dict(self.conn.execute("SELECT id, name FROM annotators").fetchall())


__all__ = ["FEEDBACK_SCHEMA", "FeedbackOps", "StoredFeedback"]
