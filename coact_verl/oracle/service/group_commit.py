"""Group commit: query reservations that arrive together share one SQLite transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from coact_verl.oracle.backends import BackendError, LabelQuery
from coact_verl.oracle.service.db import Reservation

ReserveMany = Callable[[Sequence[LabelQuery]], list[Reservation | BackendError]]
_Waiter = tuple[LabelQuery, "asyncio.Future[Reservation | BackendError]"]


class GroupCommit:
    """Queues reservations and writes them in batches, one commit per batch.

    The first caller starts a drain task; callers that arrive before it runs, or while it writes a batch, form the
    next batch. A lone request waits one event-loop turn; under load one commit (and one pass through the writers'
    lock) serves every request that came in meanwhile. Each caller is answered only after its batch committed.

    Args:
        reserve_many: writes a batch in one transaction (e.g. a bound :meth:`Store.reserve_many`), returning a
            :class:`Reservation` or the labeller's :class:`BackendError` per query, in order.
        run: awaits a store call, inline or in a worker thread (:meth:`OracleCore.db`).
        max_batch: most queries per transaction (1: a commit per query); bounds how long one write holds the lock.
    """

    def __init__(self, reserve_many: ReserveMany, run: Callable[..., Awaitable[Any]], max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._reserve_many, self._run, self.max_batch = reserve_many, run, max_batch
        self._queue: list[_Waiter] = []
        self._drainer: asyncio.Task[None] | None = None

    async def reserve(self, query: LabelQuery) -> Reservation:
        """The query's reservation once its batch is committed; raises its :class:`BackendError`, or the error
        that rolled the batch back."""
        future: asyncio.Future[Reservation | BackendError] = asyncio.get_running_loop().create_future()
        self._queue.append((query, future))
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        result = await future
        if isinstance(result, BackendError):
            raise result
        return result

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    results = await self._run(self._reserve_many, [query for query, _ in batch])
                except Exception as exc:  # rolled back: nothing of the batch is stored, every caller hears why
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (shutdown): the callers are too; keys are idempotent on retry
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # a caller that went away leaves a stored, idempotent reservation
                        future.set_result(result)
        finally:
            self._drainer = None
            for _, future in self._queue:  # only when cancelled: nobody will write these
                if not future.done():
                    future.cancel()
            self._queue.clear()
