"""Background WAL checkpoints, so that no request pays for copying the log into the database (and its fsync)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading

log = logging.getLogger("coact_verl.oracle")
# Request connections keep SQLite's own checkpoint only as a backstop (pages of about 4 KiB: roughly 200 MB).
BACKSTOP_PAGES = 50_000
WAL_SIZE_LIMIT_BYTES = 64 * 2**20


class Checkpointer:
    """A daemon thread checkpointing the WAL every ``interval_s`` seconds on its own connection.

    A round runs ``PRAGMA wal_checkpoint(PASSIVE)`` ``UNLOCKED_PASSES`` times while writers go on (each pass
    copies what was written during the last, so they shrink fast), then once more holding the writers' lock
    (``lock_path``, see :class:`Connections`): with no writer in a transaction, that pass backfills the whole
    log, so the next writer starts the log over. The WAL file then stays small and is overwritten in place,
    instead of growing under steady writes until SQLite's backstop checkpoint stalls a request for a tenth of a
    second or more (a pass without the lock cannot promise this: a writer that began before it ended appends
    behind it). Writers wait only for the short locked pass. :meth:`stop` ends the thread and folds the log
    into the database (``TRUNCATE``, best effort).
    """

    UNLOCKED_PASSES = 2

    def __init__(self, path: str, lock_path: str, interval_s: float = 1.0) -> None:
        self.path, self.interval_s, self.lock_path = path, interval_s, lock_path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oracle-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            while not self._stop.wait(self.interval_s):
                self._round(conn, lock_fd)
            self._checkpoint(conn, "TRUNCATE")
        finally:
            conn.close()
            os.close(lock_fd)

    def _round(self, conn: sqlite3.Connection, lock_fd: int) -> None:
        for _ in range(self.UNLOCKED_PASSES):
            self._checkpoint(conn, "PASSIVE")
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            self._checkpoint(conn, "PASSIVE")
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:  # another process's checkpoint, a busy lock: try again later
            log.debug("%s checkpoint skipped: %s", mode, exc)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after a last full checkpoint), waiting at most ``timeout_s`` seconds."""
        self._stop.set()
        self._thread.join(timeout_s)
