"""One sibling barrier: the n sessions of a prompt meet, the group is labelled once, every sibling gets the result.

Both verl paths use it: the rollout workers (each finished session of a training prompt waits here before
verl stores it) and the drop-in reward manager (each scored response waits here, in one async Ray actor).

Rules, whatever the caller:

* the ``label`` callable runs exactly once per group, in its own task, as soon as ``size`` sessions have
  arrived; it receives the sessions' items in session-id order;
* a session waits at most ``timeout_s`` seconds from its arrival, then raises :class:`GroupTimeout`; a group
  that times out before it was complete fails for every later arrival too;
* :meth:`SiblingBarrier.fail` (a sibling session crashed) and an error of ``label`` fail every waiting and
  later session of the group (:class:`SiblingFailed`, or the labelling error itself);
* a group opened with :meth:`SiblingBarrier.open` lives until :meth:`SiblingBarrier.close`; a group created by
  its first arrival is forgotten once every session that arrived has been answered.

Single event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutcomeT = TypeVar("OutcomeT")


class GroupTimeout(TimeoutError):
    """The group did not gather (or was not labelled) within the barrier's timeout."""


class SiblingFailed(RuntimeError):
    """Another session of the group failed, so the group cannot be labelled."""


@dataclass(frozen=True)
class Delivery(Generic[OutcomeT]):
    """The group's outcome as one session receives it.

    Attributes:
        outcome: what ``label`` returned for the whole group.
        index: this session's position in ``session_ids``, i.e. in the items ``label`` received.
        session_ids: the group's session ids, sorted, shape ``(n,)``.
    """

    outcome: OutcomeT
    index: int
    session_ids: tuple[int, ...]


@dataclass
class _Group:
    size: int
    explicit: bool
    outcome: asyncio.Future[Any]
    items: dict[int, Any] = field(default_factory=dict)
    order: tuple[int, ...] = ()
    answered: int = 0


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a failed outcome as retrieved (every waiter may have timed out already)."""
    if not future.cancelled():
        future.exception()


class SiblingBarrier(Generic[ItemT, OutcomeT]):
    """Gather the sessions of each group (by ``uid``), label each group once, hand every session the outcome.

    Args:
        label: ``label(uid, items)`` for one complete group; ``items`` in session-id order, shape ``(size,)``.
        timeout_s: the longest one session waits, from its arrival, in seconds (> 0).
    """

    def __init__(self, label: Callable[[str, Sequence[ItemT]], Awaitable[OutcomeT]], timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._label = label
        self.timeout_s = float(timeout_s)
        self._groups: dict[str, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: groups labelled, timed-out waits, failed groups (sibling or labelling error).
        self.counts = {"labelled": 0, "timeouts": 0, "failed": 0}

    def __len__(self) -> int:
        """Groups currently held."""
        return len(self._groups)

    def is_open(self, uid: str) -> bool:
        return uid in self._groups

    def open(self, uid: str, size: int) -> None:
        """Expect ``size`` sessions of ``uid``; the group lives until :meth:`close`."""
        if size < 1:
            raise ValueError(f"a group needs size >= 1, got {size}")
        if uid in self._groups:
            raise ValueError(f"group {uid!r} is already open")
        self._groups[uid] = self._new_group(size, explicit=True)

    def close(self, uid: str) -> None:
        """Forget a group (a no-op for an unknown one)."""
        self._groups.pop(uid, None)

    def fail(self, uid: str, error: BaseException) -> None:
        """A session of ``uid`` failed: its siblings raise :class:`SiblingFailed` (if not answered yet)."""
        group = self._groups.get(uid)
        if group is not None and not group.outcome.done():
            self.counts["failed"] += 1
            group.outcome.set_exception(SiblingFailed(f"a sibling session failed: {type(error).__name__}: {error}"))

    async def arrive(self, uid: str, session_id: int, item: ItemT, size: int | None = None) -> Delivery[OutcomeT]:
        """Store one session and wait for its group's outcome.

        Args:
            uid: the group.
            session_id: this session's id within the group (unique per group).
            item: what ``label`` needs from this session.
            size: the group's size, required when the group was not opened with :meth:`open`.

        Raises:
            GroupTimeout: no outcome within ``timeout_s`` of this arrival.
            SiblingFailed: a sibling failed (:meth:`fail`).
            Exception: whatever ``label`` raised.
        """
        group = self._groups.get(uid)
        if group is None:
            if size is None:
                raise KeyError(f"group {uid!r} was not opened and no size was given")
            group = self._groups[uid] = self._new_group(size, explicit=False)
        if session_id in group.items:
            raise ValueError(f"session {session_id} of group {uid!r} arrived twice")
        group.items[session_id] = item
        if len(group.items) == group.size and not group.outcome.done():
            group.order = tuple(sorted(group.items))
            task = asyncio.get_running_loop().create_task(self._run_label(uid, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(group.outcome), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            self.counts["timeouts"] += 1
            error = GroupTimeout(
                f"group {uid!r}: {len(group.items)} of {group.size} sessions, no outcome after {self.timeout_s:g} s"
            )
            if not group.order and not group.outcome.done():  # never complete: later arrivals fail at once
                group.outcome.set_exception(error)
            raise error from None
        finally:
            group.answered += 1
            if not group.explicit and group.answered >= len(group.items) and self._groups.get(uid) is group:
                del self._groups[uid]
        return Delivery(outcome, group.order.index(session_id), group.order)

    def _new_group(self, size: int, explicit: bool) -> _Group:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        return _Group(size=size, explicit=explicit, outcome=future)

    async def _run_label(self, uid: str, group: _Group) -> None:
        try:
            outcome = await self._label(uid, [group.items[sid] for sid in group.order])
        except Exception as error:  # every waiter sees the failure
            logger.exception("labelling group %s failed", uid)
            self.counts["failed"] += 1
            if not group.outcome.done():
                group.outcome.set_exception(error)
            return
        if not group.outcome.done():
            self.counts["labelled"] += 1
            group.outcome.set_result(outcome)
