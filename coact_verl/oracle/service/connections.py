"""SQLite connections: one per thread, WAL mode, writers serialised by a file lock, background checkpoints."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from coact_verl.oracle.service.checkpoint import BACKSTOP_PAGES, WAL_SIZE_LIMIT_BYTES, Checkpointer


class Connections:
    """Thread- and process-safe access to one SQLite file: a connection per thread, explicit transactions.

    Writers queue on an exclusive ``flock`` of ``<path>-lock`` before ``BEGIN IMMEDIATE``: the kernel wakes the next
    writer as soon as the lock is free, where SQLite's own busy handler would poll with sleeps of up to 100 ms.
    With ``checkpoint_every_s`` set, a :class:`Checkpointer` thread copies the WAL into the database, so that
    commits never do it themselves.
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
        checkpoint_every_s: float | None = 0.25,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        self.path, self._sync, self._busy_ms = path, synchronous.upper(), int(busy_timeout_s * 1000)
        self.lock_path = f"{path}-lock"  # the writers' lock (flock), shared with the checkpointer
        self._background_checkpoints = bool(checkpoint_every_s)
        self._local = threading.local()
        self._all: list[tuple[sqlite3.Connection, int]] = []
        self._lock = threading.Lock()
        if path != ":memory:" and not os.path.exists(path):
            # Owner-only: gold answers and token hashes live here. SQLite gives the WAL and SHM files the
            # database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.conn.execute("SELECT 1")  # creates the file in WAL mode before the checkpointer opens it
        self._checkpointer = Checkpointer(path, self.lock_path, checkpoint_every_s) if checkpoint_every_s else None

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._sync}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            if self._background_checkpoints:
                conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            self._local.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._local.conn = conn
            with self._lock:
                self._all.append((conn, self._local.lock_fd))
        return conn

    def close(self) -> None:
        """Close every connection opened here (after a last checkpoint)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            for conn, fd in self._all:
                conn.close()
                os.close(fd)
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception) under the writers' file lock."""
        conn, fd = self.conn, self._local.lock_fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
