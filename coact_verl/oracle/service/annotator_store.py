"""Annotator accounts and human-task leases (mixed into :class:`~coact_verl.oracle.service.db.Store`)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

from coact_verl.oracle.backends.base import LabelQuery


def token_hash(token: str) -> str:
    """Hex SHA-256 of a bearer token (annotator tokens are stored only hashed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class AnnotatorOps:
    """Needs ``conn``, ``_tx()``, ``_query(conn, id)`` and ``_void(conn, id)`` from the store it is
    mixed into."""

    if TYPE_CHECKING:

        @property
        def conn(self) -> sqlite3.Connection: ...  # read-only on the store (one connection per thread)

    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _query: Callable[[sqlite3.Connection, int], LabelQuery]
    _void: Callable[[sqlite3.Connection, int], None]

    def create_annotator(self, name: str) -> tuple[int, str]:
        """Create an annotator; returns (id, bearer token). Only the token's hash is stored."""
        token = "ann-" + secrets.token_urlsafe(24)
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO annotators (name, token_hash, created_at) VALUES (?, ?, ?)",
                (name, token_hash(token), time.time()),
            )
            return int(cast(int, cur.lastrowid)), token  # an INSERT's cursor always has a row id

    def annotator_id(self, hashed: str) -> int | None:
        """Annotator id for a hashed token."""
        row = self.conn.execute(
            "SELECT id FROM annotators WHERE token_hash = ? AND revoked_at IS NULL", (hashed,)
        ).fetchone()
        return None if row is None else row[0]

    def revoke_annotator(self, annotator_id: int) -> bool:
        """Revoke an annotator's token (its stored votes and edits stay); false for an unknown id."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE annotators SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (time.time(), annotator_id)
            )
            return cur.rowcount > 0

    def set_trust(self, annotator_id: int, trust: float | None) -> bool:
        """Set (``None``: clear) the weight an admin gives an annotator's votes and edits instead of its η̂."""
        with self._tx() as conn:
            return conn.execute("UPDATE annotators SET trust = ? WHERE id = ?", (trust, annotator_id)).rowcount > 0

    def annotator_trust(self) -> dict[int, float]:
        """Admin-set trust of the annotators that have one."""
        return dict(self.conn.execute("SELECT id, trust FROM annotators WHERE trust IS NOT NULL").fetchall())

    @staticmethod
    def holds_lease(conn: sqlite3.Connection, query_id: int, annotator_id: int) -> bool:
        """Whether ``annotator_id`` holds the lease of ``query_id``."""
        row = conn.execute("SELECT assigned_to FROM queries WHERE id = ?", (query_id,)).fetchone()
        return row is not None and row[0] == annotator_id

    def next_task(self, annotator_id: int, lease_s: float) -> LabelQuery | None:
        """Lease the oldest pending query to ``annotator_id`` (its own lease first, then free or expired ones)."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM queries WHERE status = 'pending' AND (assigned_to IS NULL OR assigned_to = ?"
                " OR assigned_at < ?) ORDER BY (assigned_to IS ?) DESC, id LIMIT 1",
                (annotator_id, now - lease_s, annotator_id),
            ).fetchone()
            if row is None:
                return None
            lease = (annotator_id, now, row[0])
            conn.execute("UPDATE queries SET assigned_to = ?, assigned_at = ? WHERE id = ?", lease)
            return self._query(conn, row[0])

    def expire_pending(self, ttl_s: float) -> int:
        """Refund human-queue queries unanswered for ``ttl_s`` seconds (they become ``failed``; their keys may be
        sent again); returns how many."""
        cutoff = time.time() - ttl_s
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id FROM queries WHERE status = 'pending' AND created_at < ?", (cutoff,)
            ).fetchall()
            for (query_id,) in rows:
                self._void(conn, query_id)
            return len(rows)

    def leased_task(self, query_id: int, annotator_id: int) -> LabelQuery | None:
        """The pending query ``query_id`` if ``annotator_id`` holds its lease."""
        conn = self.conn
        row = conn.execute("SELECT status, assigned_to FROM queries WHERE id = ?", (query_id,)).fetchone()
        if row is None or row[0] != "pending" or row[1] != annotator_id:
            return None
        return self._query(conn, query_id)


__all__ = ["AnnotatorOps", "token_hash"]
