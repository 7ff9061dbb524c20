"""Group commit: store writes that arrive together share one SQLite transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from coact_verl.oracle.backends import BackendError

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class GroupCommit(Generic[_Item, _Result]):
    """Queues writes and runs them in batches, one transaction per batch.

    The first caller starts a drain task; callers that arrive before it runs, or while it writes a batch, form the
    next batch. A lone write waits one event-loop turn; under load one commit (and one pass through the writers'
    lock) serves every request that came in meanwhile. Each caller is answered only after its batch committed.

    Args:
        write_many: writes a batch in one transaction (e.g. a bound :meth:`Store.reserve_many`), returning one
            result per item, in order; a :class:`BackendError` in that list is raised to its caller alone.
        run: awaits a store call, inline or in a worker thread (:meth:`OracleCore.db`).
        max_batch: most items per transaction (1: a commit per item); bounds how long one write holds the lock.
    """

    def __init__(
        self,
        write_many: Callable[[Sequence[_Item]], Sequence[_Result | BackendError]],
        run: Callable[..., Awaitable[Any]],
        max_batch: int = 256,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._write_many, self._run, self.max_batch = write_many, run, max_batch
        self._queue: list[tuple[_Item, asyncio.Future[_Result | BackendError]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: _Item) -> _Result:
        """The item's result once its batch is committed; raises its :class:`BackendError`, or the error that
        rolled the batch back."""
        future: asyncio.Future[_Result | BackendError] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
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
                    results = await self._run(self._write_many, [item for item, _ in batch])
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
                    if not future.done():  # a caller that went away leaves a stored, idempotent result
                        future.set_result(result)
        finally:
            self._drainer = None
            for _, future in self._queue:  # only when cancelled: nobody will write these
                if not future.done():
                    future.cancel()
            self._queue.clear()
