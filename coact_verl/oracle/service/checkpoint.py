"""Background WAL checkpoints, so that no request pays for copying the log into the database (and its fsync)."""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("coact_verl.oracle")
# Request connections keep SQLite's own checkpoint only as a backstop (pages of about 4 KiB: roughly 200 MB).
BACKSTOP_PAGES = 50_000
WAL_SIZE_LIMIT_BYTES = 64 * 2**20


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval_s`` seconds on its own connection.

    Passive checkpoints never wait for readers or writers; a writer restarts the log once a checkpoint has caught
    up, so the WAL stays small. :meth:`stop` ends the thread and folds the log into the database
    (``TRUNCATE``, best effort).
    """

    def __init__(self, path: str, interval_s: float = 1.0) -> None:
        self.path, self.interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oracle-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            while not self._stop.wait(self.interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # another process's checkpoint, a busy lock: try again later
                    log.debug("checkpoint skipped: %s", exc)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                log.debug("final checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after a last full checkpoint), waiting at most ``timeout_s`` seconds."""
        self._stop.set()
        self._thread.join(timeout_s)
