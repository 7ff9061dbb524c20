"""The sibling barrier: label once per group, time out, fail every sibling with a failed one (plain asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from coact_verl.group.gather import GroupTimeout, SiblingBarrier, SiblingFailed


class Labeller:
    """Counts calls; returns the items joined, after an optional delay."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.delay_s = delay_s
        self.error = error

    async def __call__(self, uid: str, items: Sequence[str]) -> str:
        self.calls.append((uid, list(items)))
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return "+".join(items)


async def test_a_complete_group_is_labelled_once_and_every_session_gets_its_position():
    label = Labeller(delay_s=0.01)
    barrier = SiblingBarrier(label, timeout_s=5)
    # sessions arrive out of order; the labeller sees them in session-id order
    deliveries = await asyncio.gather(*(barrier.arrive("u", sid, f"r{sid}", size=4) for sid in (2, 0, 3, 1)))
    assert label.calls == [("u", ["r0", "r1", "r2", "r3"])]
    assert {d.outcome for d in deliveries} == {"r0+r1+r2+r3"}
    assert [d.index for d in deliveries] == [2, 0, 3, 1] and deliveries[0].session_ids == (0, 1, 2, 3)
    assert len(barrier) == 0 and barrier.counts == {"labelled": 1, "timeouts": 0, "failed": 0}


async def test_groups_are_independent_and_an_incomplete_one_times_out_for_every_sibling():
    label = Labeller()
    barrier = SiblingBarrier(label, timeout_s=0.2)
    waiting = [asyncio.create_task(barrier.arrive("short", sid, "x", size=3)) for sid in (0, 1)]
    done = await asyncio.gather(barrier.arrive("full", 0, "a", size=2), barrier.arrive("full", 1, "b", size=2))
    assert [d.outcome for d in done] == ["a+b", "a+b"]
    for task in waiting:
        with pytest.raises(GroupTimeout, match="2 of 3 sessions"):
            await task
    assert [uid for uid, _ in label.calls] == ["full"] and barrier.counts["timeouts"] == 2
    assert len(barrier) == 0  # a group made by its first arrival is forgotten once every arrival was answered


async def test_a_late_sibling_of_an_opened_group_that_timed_out_fails_at_once():
    barrier = SiblingBarrier(Labeller(), timeout_s=0.1)
    barrier.open("u", 2)
    with pytest.raises(GroupTimeout):
        await barrier.arrive("u", 0, "a")
    start = asyncio.get_running_loop().time()
    with pytest.raises(GroupTimeout):
        await barrier.arrive("u", 1, "b")  # the group is complete now, but it already failed
    assert asyncio.get_running_loop().time() - start < 0.05
    assert barrier.is_open("u")
    barrier.close("u")
    assert not barrier.is_open("u")


async def test_a_failed_sibling_releases_the_waiting_ones_and_later_ones():
    label = Labeller()
    barrier = SiblingBarrier(label, timeout_s=5)
    barrier.open("u", 3)
    first = asyncio.create_task(barrier.arrive("u", 0, "a"))
    await asyncio.sleep(0)
    barrier.fail("u", RuntimeError("engine died"))
    with pytest.raises(SiblingFailed, match="RuntimeError: engine died"):
        await first
    with pytest.raises(SiblingFailed):
        await barrier.arrive("u", 2, "c")
    assert label.calls == [] and barrier.counts["failed"] == 1


async def test_a_labelling_error_reaches_every_sibling_and_is_counted():
    barrier = SiblingBarrier(Labeller(error=ValueError("oracle exploded")), timeout_s=5)
    results = await asyncio.gather(*(barrier.arrive("u", sid, "x", size=2) for sid in (0, 1)), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert barrier.counts == {"labelled": 0, "timeouts": 0, "failed": 1}


async def test_labelling_survives_the_cancellation_of_the_session_that_completed_the_group():
    label = Labeller(delay_s=0.05)
    barrier = SiblingBarrier(label, timeout_s=5)
    first = asyncio.create_task(barrier.arrive("u", 0, "a", size=2))
    last = asyncio.create_task(barrier.arrive("u", 1, "b", size=2))
    await asyncio.sleep(0.01)
    last.cancel()
    assert (await first).outcome == "a+b" and len(label.calls) == 1


async def test_misuse_fails_loudly():
    barrier = SiblingBarrier(Labeller(), timeout_s=1)
    with pytest.raises(KeyError, match="not opened"):
        await barrier.arrive("u", 0, "a")
    barrier.open("u", 2)
    with pytest.raises(ValueError, match="already open"):
        barrier.open("u", 2)
    task = asyncio.create_task(barrier.arrive("u", 0, "a"))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="arrived twice"):
        await barrier.arrive("u", 0, "a")
    task.cancel()
    with pytest.raises(ValueError):
        SiblingBarrier(Labeller(), timeout_s=0)
