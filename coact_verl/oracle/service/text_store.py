"""Candidate responses stored once: long texts live in a ``texts`` table keyed by their SHA-256.

A query's ``candidates`` column holds ``[answer, response, votes]`` per candidate, where a response of at least
``DEDUP_MIN_CHARS`` characters is replaced by ``{"h": <hex sha256>}``. Groups resend the same responses (majority
answers, retries, the same prompt at later steps), so a long run stores each distinct text once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from coact_verl.oracle.backends.base import Candidate

TEXT_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS texts (hash TEXT PRIMARY KEY, text TEXT NOT NULL) WITHOUT ROWID;
COMMIT;
"""
DEDUP_MIN_CHARS = 256  # shorter responses stay inline (a hash and a lookup would cost more than they save)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode_candidates(candidates: Iterable[Candidate], conn: sqlite3.Connection | None = None) -> str:
    """The stored form of ``candidates``; with ``conn`` (inside a write transaction) long texts are stored too."""
    rows, texts = [], []
    for c in candidates:
        response: object = c.response
        if len(c.response) >= DEDUP_MIN_CHARS:
            digest = _digest(c.response)
            texts.append((digest, c.response))
            response = {"h": digest}
        rows.append([c.answer, response, c.votes])
    if conn is not None and texts:
        conn.executemany("INSERT OR IGNORE INTO texts (hash, text) VALUES (?, ?)", texts)
    return json.dumps(rows)


def decode_candidates(conn: sqlite3.Connection, stored: str) -> tuple[Candidate, ...]:
    """The candidates of a stored ``candidates`` column (long texts looked up)."""
    rows: Sequence[list[Any]] = json.loads(stored)
    wanted = [r[1]["h"] for r in rows if isinstance(r[1], dict)]
    texts: dict[str, str] = {}
    if wanted:
        marks = ",".join("?" * len(set(wanted)))
        texts = dict(conn.execute(f"SELECT hash, text FROM texts WHERE hash IN ({marks})", sorted(set(wanted))))
    return tuple(Candidate(a, texts[r["h"]] if isinstance(r, dict) else r, v) for a, r, v in rows)


__all__ = ["DEDUP_MIN_CHARS", "TEXT_SCHEMA", "decode_candidates", "encode_candidates"]
