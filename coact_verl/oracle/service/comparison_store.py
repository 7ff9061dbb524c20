"""Comparison tasks, their leases to annotators, and votes on them (mixed into the store).

A comparison shows two responses to one prompt. Who created it (an admin or the trainer) records which side came
from the stronger model (``stronger``) and, for a control, which side is known to be better (``better``); the
service also makes controls from gold-labelled queries (a right and a wrong candidate). Annotators never see these
fields: they fetch comparisons in the order of a random key drawn at creation (controls and ordinary comparisons
interleave), each behind an opaque per-annotator ticket, and vote with ``{key, ticket, picked}``. The stored vote
takes ``stronger`` and ``better`` from the comparison, so the attentiveness EM sees only what the service knows.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coact_verl.oracle.service.text_store import decode_candidates

COMPARISON_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS comparisons (id INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT NOT NULL,
    task TEXT NOT NULL, prompt TEXT NOT NULL, response_a TEXT NOT NULL, response_b TEXT NOT NULL,
    stronger TEXT NOT NULL CHECK (stronger IN ('a', 'b')), better TEXT CHECK (better IN ('a', 'b')),
    assigned_to INTEGER, source_query INTEGER UNIQUE, shuffle INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS comparisons_by_shuffle ON comparisons (shuffle);
CREATE TABLE IF NOT EXISTS comparison_leases (ticket TEXT PRIMARY KEY, comparison INTEGER NOT NULL,
    annotator INTEGER NOT NULL, voted INTEGER NOT NULL DEFAULT 0, leased_at REAL NOT NULL,
    UNIQUE (annotator, comparison));
CREATE INDEX IF NOT EXISTS comparison_leases_open ON comparison_leases (annotator, voted);
COMMIT;
"""


class VoteConflict(Exception):
    """A vote's key was stored with another body, or its ticket was already voted on (HTTP 409)."""


class UnknownTicket(Exception):
    """A vote names a ticket that was not leased to the caller (HTTP 404)."""


@dataclass(frozen=True)
class NewComparison:
    """A comparison to create; ``better`` only for controls; ``annotator`` restricts it to one annotator."""

    prompt_id: str
    prompt: str
    task: str
    response_a: str
    response_b: str
    stronger: str
    better: str | None = None
    annotator: int | None = None


@dataclass(frozen=True)
class ServedComparison:
    """A comparison as an annotator sees it."""

    ticket: str
    prompt_id: str
    prompt: str
    task: str
    response_a: str
    response_b: str


def _shuffle_key() -> int:
    return secrets.randbits(62)


class ComparisonOps:
    """Needs ``conn`` and ``_tx()`` from the store it is mixed into (and ``_put`` of the feedback mixin)."""

    if TYPE_CHECKING:

        @property
        def conn(self) -> sqlite3.Connection: ...  # read-only on the store (one connection per thread)

    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def create_comparisons(self, items: Sequence[NewComparison]) -> list[int]:
        """Store comparisons in one transaction; returns their ids."""
        now = time.time()
        with self._tx() as conn:
            return [
                int(
                    conn.execute(
                        "INSERT INTO comparisons (prompt_id, task, prompt, response_a, response_b, stronger, better,"
                        " assigned_to, shuffle, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            c.prompt_id,
                            c.task,
                            c.prompt,
                            c.response_a,
                            c.response_b,
                            c.stronger,
                            c.better,
                            c.annotator,
                            _shuffle_key(),
                            now,
                        ),  # fmt: skip
                    ).lastrowid  # type: ignore[arg-type]
                )
                for c in items
            ]

    def controls_from_gold(self, limit: int) -> int:
        """Make up to ``limit`` control comparisons from labelled queries with a right and a wrong candidate
        (distinct responses), each query at most once, the better side drawn at random; returns how many."""
        made, after, now = 0, 0, time.time()
        with self._tx() as conn:
            while made < limit:
                rows = conn.execute(
                    "SELECT q.id, q.prompt_id, q.prompt, q.task, q.candidates, l.correct FROM labels l"
                    " JOIN queries q ON q.id = l.query_id WHERE l.id > ? AND l.correct LIKE '%true%'"
                    " AND l.correct LIKE '%false%' AND NOT EXISTS (SELECT 1 FROM comparisons c"
                    " WHERE c.source_query = q.id) ORDER BY l.id LIMIT 500",
                    (after,),
                ).fetchall()
                if not rows:
                    break
                for query_id, prompt_id, prompt, task, candidates, correct in rows:
                    after = max(after, query_id)
                    texts = [c.response for c in decode_candidates(conn, candidates)]
                    verdicts = json.loads(correct)
                    right = next((t for t, v in zip(texts, verdicts, strict=False) if v is True and t.strip()), None)
                    wrong = next((t for t, v in zip(texts, verdicts, strict=False) if v is False and t.strip()), None)
                    if right is None or wrong is None or right.strip() == wrong.strip() or made >= limit:
                        continue
                    better = "a" if secrets.randbits(1) else "b"
                    a, b = (right, wrong) if better == "a" else (wrong, right)
                    conn.execute(
                        "INSERT INTO comparisons (prompt_id, task, prompt, response_a, response_b, stronger, better,"
                        " source_query, shuffle, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (prompt_id, task, prompt, a, b, better, better, query_id, _shuffle_key(), now),
                    )
                    made += 1
        return made

    def lease_comparisons(self, annotator_id: int, limit: int) -> list[ServedComparison]:
        """The caller's open leases (oldest first), then new comparisons in random-key order, up to ``limit``."""
        now = time.time()
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT l.ticket, c.id FROM comparison_leases l JOIN comparisons c ON c.id = l.comparison"
                " WHERE l.annotator = ? AND l.voted = 0 ORDER BY c.shuffle LIMIT ?",
                (annotator_id, limit),
            ).fetchall()
            served = [(ticket, cid) for ticket, cid in rows]
            if len(served) < limit:
                fresh = conn.execute(
                    "SELECT c.id FROM comparisons c WHERE (c.assigned_to IS NULL OR c.assigned_to = ?)"
                    " AND NOT EXISTS (SELECT 1 FROM comparison_leases l WHERE l.annotator = ? AND l.comparison = c.id)"
                    " ORDER BY c.shuffle LIMIT ?",
                    (annotator_id, annotator_id, limit - len(served)),
                ).fetchall()
                for (cid,) in fresh:
                    ticket = secrets.token_urlsafe(16)
                    conn.execute(
                        "INSERT INTO comparison_leases (ticket, comparison, annotator, leased_at) VALUES (?, ?, ?, ?)",
                        (ticket, cid, annotator_id, now),
                    )
                    served.append((ticket, cid))
            out = []
            for ticket, cid in served:
                row = conn.execute(
                    "SELECT prompt_id, prompt, task, response_a, response_b FROM comparisons WHERE id = ?", (cid,)
                ).fetchone()
                out.append(ServedComparison(ticket, *row))
            return out

    @staticmethod
    def leased_comparison(conn: sqlite3.Connection, annotator_id: int, ticket: str) -> tuple[Any, ...] | None:
        """``(voted, prompt_id, prompt, task, response_a, response_b, stronger, better)`` of a ticket leased to
        ``annotator_id``, else ``None``."""
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT l.voted, c.prompt_id, c.prompt, c.task, c.response_a, c.response_b, c.stronger, c.better"
            " FROM comparison_leases l JOIN comparisons c ON c.id = l.comparison WHERE l.ticket = ?"
            " AND l.annotator = ?",
            (ticket, annotator_id),
        ).fetchone()
        return row

    def comparison_count(self) -> tuple[int, int]:
        """(comparisons, controls among them)."""
        row = self.conn.execute("SELECT COUNT(*), COUNT(better) FROM comparisons").fetchone()
        return int(row[0]), int(row[1])


__all__ = [
    "COMPARISON_SCHEMA",
    "ComparisonOps",
    "NewComparison",
    "ServedComparison",
    "UnknownTicket",
    "VoteConflict",
]
