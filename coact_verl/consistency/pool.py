"""A small process pool whose every task has a hard wall-clock timeout.

A task that runs past its timeout has its worker process killed (SIGKILL) and replaced; a worker that dies
(segfault, ``os._exit``, out of memory) is replaced too. Either way only that one task is reported as
``"timeout"`` / ``"crash"``; the rest of its chunk is re-queued, so one pathological input never costs a whole
batch and never hangs the caller. Workers run tasks in their main thread (signal-based timeouts inside a task
keep working) and are started with ``spawn`` or ``forkserver``, which is safe from threaded callers such as
Ray actors. The pool starts lazily on the first :meth:`HardTimeoutPool.map` and stops on :meth:`close`, on
garbage collection or at interpreter exit.
"""

from __future__ import annotations

import collections
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

START_METHODS = ("spawn", "forkserver")


class Outcome(NamedTuple):
    """Result of one task: ``status`` is ``ok``, ``error``, ``timeout`` or ``crash``; ``value`` the return value
    (``ok``) or a short message."""

    status: str
    value: Any

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class PoolStats:
    """Counters since the pool was created."""

    tasks: int = 0
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    round_trips: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Worker:
    process: Any
    conn: Any
    started: float
    ready: bool = False
    chunk: list[int] | None = None
    pos: int = 0
    deadline: float | None = None
    pending_items: list[Any] = field(default_factory=list)


def _worker_main(conn: Any, preload: tuple[str, ...], initializer: Callable[[], None] | None, memory_mb: int) -> None:
    """Worker loop: receive ``(fn, items)``, send one ``Outcome`` per item, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    if memory_mb > 0:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
            pass
    for name in preload:
        importlib.import_module(name)
    if initializer is not None:
        initializer()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, items = message
        for item in items:
            try:
                out = Outcome("ok", fn(item))
            except Exception as exc:  # any failure of a task is that task's result
                out = Outcome("error", f"{type(exc).__name__}: {str(exc)[:300]}")
            try:
                conn.send(out)
            except Exception as exc:  # an unpicklable return value
                conn.send(Outcome("error", f"result could not be sent: {type(exc).__name__}"))


def _noop(item: Any) -> Any:
    return item


def _stop_workers(workers: list[_Worker], owner_pid: int) -> None:
    """Ask workers to exit, kill those that do not within a second. Safe to call twice."""
    if os.getpid() != owner_pid:
        return
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join(1.0)
        w.conn.close()
    workers.clear()


class HardTimeoutPool:
    """Process pool with a hard per-task timeout.

    Args:
        workers: number of worker processes (>= 1).
        timeout_s: wall-clock limit of one task, in seconds, measured from the moment the worker is free.
        start_method: ``spawn`` or ``forkserver``.
        preload: modules imported by each worker before it reports ready (import time is not task time).
        initializer: picklable top-level function run once in each worker after ``preload``.
        memory_mb: address-space limit of each worker in MiB (0: none); exceeding it fails the task.
        startup_timeout_s: how long a worker may take to start before the start counts as failed.
    """

    def __init__(
        self,
        workers: int = 1,
        timeout_s: float = 5.0,
        *,
        start_method: str = "spawn",
        preload: Sequence[str] = (),
        initializer: Callable[[], None] | None = None,
        memory_mb: int = 0,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
        self.num_workers = workers
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.stats = PoolStats()
        self._ctx: Any = multiprocessing.get_context(start_method)  # a spawn or forkserver context
        self._preload = tuple(preload)
        self._initializer = initializer
        self._memory_mb = int(memory_mb)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers, self._owner_pid)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> HardTimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (e.g. to read their CPU time); empty before the pool starts."""
        return [w.process.pid for w in self._workers]

    def close(self) -> None:
        """Stop all workers. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def start(self) -> None:
        """Start all workers now and wait until each has imported its modules (idempotent)."""
        with self._lock:
            self._ensure_started()
            self._guarded_run(_noop, [], self.timeout_s, 1)

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._preload, self._initializer, self._memory_mb),
            daemon=True,
            name="coact-verify-worker",
        )
        try:
            process.start()
        except (AssertionError, OSError) as exc:  # e.g. called from a daemonic process, or out of PIDs
            parent_conn.close()
            child_conn.close()
            raise RuntimeError(f"cannot start a verification worker process: {exc}") from exc
        child_conn.close()
        return _Worker(process=process, conn=parent_conn, started=time.monotonic())

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("the pool is closed")
        if os.getpid() != self._owner_pid:  # inherited through fork: those workers belong to the parent
            self._workers[:] = []
            self._owner_pid = os.getpid()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _stop_workers, self._workers, self._owner_pid)
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _replace(self, index: int) -> None:
        old = self._workers[index]
        if old.process.is_alive():
            old.process.kill()
        old.process.join(5.0)
        old.conn.close()
        self._workers[index] = self._spawn()
        self.stats.restarts += 1

    # ------------------------------------------------------------------ work

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, timeout_s: float | None = None, chunk_size: int = 0
    ) -> list[Outcome]:
        """Run ``fn(item)`` for every item; return one :class:`Outcome` per item, in order.

        Args:
            fn: a picklable top-level function (it is imported by name in the workers).
            items: picklable arguments, one task each.
            timeout_s: per-task limit for this call (default: the pool's ``timeout_s``).
            chunk_size: items sent to a worker at once (0: chosen from the number of items and workers).

        Raises:
            RuntimeError: the pool is closed, or workers repeatedly fail to start.
        """
        if not items:
            return []
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        with self._lock:
            self._ensure_started()
            self.stats.round_trips += 1
            return self._guarded_run(fn, list(items), limit, chunk_size)

    def _guarded_run(self, fn: Callable[[Any], Any], items: list[Any], limit: float, chunk_size: int) -> list[Outcome]:
        try:
            return self._run(fn, items, limit, chunk_size)
        except BaseException:
            # Interrupted (e.g. KeyboardInterrupt): busy workers would send stale results later, so replace them.
            for i, w in enumerate(self._workers):
                if w.chunk is not None:
                    w.chunk = None
                    self._replace(i)
            raise

    def _run(self, fn: Callable[[Any], Any], items: list[Any], limit: float, chunk_size: int) -> list[Outcome]:
        n = len(items)
        size = chunk_size or max(1, min(64, -(-n // (4 * self.num_workers))))
        queue: collections.deque[list[int]] = collections.deque(
            list(range(start, min(n, start + size))) for start in range(0, n, size)
        )
        results: list[Outcome | None] = [None] * n
        failed_starts = 0

        def finish(index: int, outcome: Outcome) -> None:
            results[index] = outcome
            self.stats.tasks += 1
            if outcome.status == "error":
                self.stats.errors += 1

        def fail_current(slot: int, status: str) -> None:
            """The running task of worker ``slot`` timed out or crashed: record it, requeue the rest, replace."""
            w = self._workers[slot]
            if w.chunk is not None:
                finish(w.chunk[w.pos], Outcome(status, f"task {status} (limit {limit:g} s)"))
                rest = w.chunk[w.pos + 1 :]
                if rest:
                    queue.appendleft(rest)
                if status == "timeout":
                    self.stats.timeouts += 1
                else:
                    self.stats.crashes += 1
            self._replace(slot)

        wait_ready = n == 0  # ``start``: no work, just wait for every worker to report ready
        while queue or any(w.chunk is not None or (wait_ready and not w.ready) for w in self._workers):
            now = time.monotonic()
            for slot, w in enumerate(self._workers):
                if w.ready and w.chunk is None and queue:
                    chunk = queue.popleft()
                    try:
                        w.conn.send((fn, [items[i] for i in chunk]))
                    except (OSError, ValueError):  # died while idle: nothing of this chunk ran
                        queue.appendleft(chunk)
                        self._replace(slot)
                        continue
                    w.chunk, w.pos, w.deadline = chunk, 0, now + limit
            waiting = {w.conn: slot for slot, w in enumerate(self._workers) if w.chunk is not None or not w.ready}
            if not waiting:
                continue
            deadlines = [self._deadline(w) for w in self._workers if w.chunk is not None or not w.ready]
            ready: list[Any] = wait(list(waiting), timeout=max(0.0, min(deadlines) - time.monotonic()))
            for conn in ready:
                slot = waiting[conn]
                w = self._workers[slot]
                try:
                    while conn.poll():
                        message = conn.recv()
                        if not w.ready:
                            w.ready, failed_starts = True, 0
                            continue
                        assert w.chunk is not None
                        finish(w.chunk[w.pos], message)
                        w.pos += 1
                        w.deadline = time.monotonic() + limit
                        if w.pos == len(w.chunk):
                            w.chunk, w.deadline = None, None
                            break
                except (EOFError, OSError):
                    if not w.ready:
                        failed_starts += 1
                        self._check_starts(failed_starts, w)
                    fail_current(slot, "crash")
            now = time.monotonic()
            for slot, w in enumerate(self._workers):
                if (w.chunk is not None or not w.ready) and self._deadline(w) <= now:
                    if not w.ready:
                        failed_starts += 1
                        self._check_starts(failed_starts, w)
                    fail_current(slot, "timeout")
        return [r if r is not None else Outcome("crash", "lost") for r in results]

    def _deadline(self, w: _Worker) -> float:
        if not w.ready:
            return w.started + self.startup_timeout_s
        return w.deadline if w.deadline is not None else float("inf")

    def _check_starts(self, failed_starts: int, w: _Worker) -> None:
        if failed_starts >= 3:
            code = w.process.exitcode
            raise RuntimeError(
                f"verification workers failed to start {failed_starts} times in a row (last exit code {code}); "
                "check that the worker modules import in a fresh interpreter and that the main script guards "
                "its entry point with `if __name__ == '__main__':` (spawned workers re-import it)"
            )
