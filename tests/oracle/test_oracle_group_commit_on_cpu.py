"""Group commit: concurrent reservations share a transaction; errors reach exactly the callers they concern."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading

import pytest

from coact_verl.oracle.backends import BackendError, Candidate, LabelQuery, LabelResult
from coact_verl.oracle.backends.gold import GoldBackend
from coact_verl.oracle.service.core import OracleCore
from coact_verl.oracle.service.db import Store
from coact_verl.oracle.service.group_commit import GroupCommit
from coact_verl.oracle.service.schemas import QueryIn


def _q(key: str) -> LabelQuery:
    return LabelQuery(0, key, "p1", "prompt", "gsm8k", 0, (Candidate("1", "r", 2), Candidate("2", "r", 1)))


def _labeller(query: LabelQuery) -> LabelResult:
    if query.key.startswith("bad"):
        raise RuntimeError("no verdict")
    return LabelResult((True, False), "1", "gold")


class _Recorder:
    """``Store.reserve_many`` that records its batch sizes, optionally failing or pausing on chosen calls."""

    def __init__(self, store: Store, fail_on: tuple[int, ...] = (), hold: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self._reserve = functools.partial(store.reserve_many, needs_gold=True, initial="labeling", labeller=_labeller)
        self._fail_on, self._hold = fail_on, hold

    def __call__(self, queries):
        self.batches.append(len(queries))
        if self._hold is not None and len(self.batches) == 1:
            assert self._hold.wait(10)
        if len(self.batches) in self._fail_on:
            raise sqlite3.OperationalError("database is locked")
        return self._reserve(queries)


async def _inline(fn, *args):
    return fn(*args)


async def _threaded(fn, *args):
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    store.put_gold({"p1": "1"})
    store.set_budget(50)
    yield store
    store.close()


async def test_concurrent_reservations_share_one_commit_and_the_budget_stays_exact(store):
    record = _Recorder(store)
    group = GroupCommit(record, _inline)
    results = await asyncio.gather(*(group.submit(_q(f"k{i}")) for i in range(64)))
    assert record.batches == [64]
    assert [r.status for r in results] == ["labeled"] * 50 + ["over_budget"] * 14
    assert [r.budget.spent for r in results[:50]] == list(range(1, 51)) and store.budget().spent == 50
    again = await group.submit(_q("k3"))  # idempotent: the stored label, no charge
    assert again.status == "labeled" and not again.fresh and record.batches == [64, 1]


async def test_callers_arriving_during_a_threaded_write_form_the_next_batch(store):
    hold = threading.Event()
    record = _Recorder(store, hold=hold)
    group = GroupCommit(record, _threaded)
    first = asyncio.ensure_future(group.submit(_q("first")))
    while not record.batches:  # the first batch is being written (held) in a worker thread
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(group.submit(_q(f"k{i}"))) for i in range(10)]
    await asyncio.sleep(0.05)
    hold.set()
    results = await asyncio.gather(first, *rest)
    assert record.batches == [1, 10] and all(r.fresh for r in results)


async def test_a_labeller_failure_reaches_its_caller_only(store):
    group = GroupCommit(_Recorder(store), _inline)
    outcomes = await asyncio.gather(*(group.submit(_q(k)) for k in ("a", "bad", "b")), return_exceptions=True)
    assert isinstance(outcomes[1], BackendError) and "no verdict" in str(outcomes[1])
    assert outcomes[0].status == outcomes[2].status == "labeled" and store.budget().spent == 2


async def test_a_rolled_back_batch_fails_every_caller_and_the_next_batch_runs(store):
    record = _Recorder(store, fail_on=(1,))
    group = GroupCommit(record, _inline)
    outcomes = await asyncio.gather(*(group.submit(_q(f"k{i}")) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert store.budget().spent == 0  # nothing of the failed batch was stored
    retried = await asyncio.gather(*(group.submit(_q(f"k{i}")) for i in range(3)))
    assert [r.fresh for r in retried] == [True] * 3 and record.batches == [3, 3] and store.budget().spent == 3


async def test_a_caller_that_goes_away_leaves_the_others_and_a_stored_reservation(store):
    group = GroupCommit(_Recorder(store), _inline)
    tasks = [asyncio.ensure_future(group.submit(_q(k))) for k in ("a", "gone", "b")]
    await asyncio.sleep(0)  # every caller has queued its query; the drainer has not run yet
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError) and done[0].fresh and done[2].fresh
    retry = await group.submit(_q("gone"))  # same key again: stored and charged once, not twice
    assert retry.status == "labeled" and not retry.fresh and store.budget().spent == 3


async def test_batches_are_bounded_by_max_batch(store):
    record = _Recorder(store)
    group = GroupCommit(record, _inline, max_batch=4)
    results = await asyncio.gather(*(group.submit(_q(f"k{i}")) for i in range(10)))
    assert record.batches == [4, 4, 2] and [r.query.key for r in results] == [f"k{i}" for i in range(10)]
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(record, _inline, max_batch=0)


async def test_the_service_core_charges_and_stores_labels_in_batches(store):
    """Through :class:`OracleCore` with a backend that checks answers in worker threads (two transactions per
    query): 40 concurrent queries are charged in one batch and their labels stored in far fewer than 40."""
    charges, labels = [], []
    reserve_many, finish_many = store.reserve_many, store.finish_many
    store.reserve_many = lambda queries, **kw: charges.append(len(queries)) or reserve_many(queries, **kw)
    store.finish_many = lambda items: labels.append(len(items)) or finish_many(items)
    store.put_gold({f"p{i}": str(i) for i in range(40)})
    store.set_budget(None)
    core = OracleCore(store, GoldBackend(equivalent=lambda gold, answer: gold == answer, offload=True))
    bodies = [
        QueryIn(key=f"q{i}", prompt_id=f"p{i}", prompt="?", candidates=[{"answer": str(i)}, {"answer": "x"}])
        for i in range(40)
    ]
    outs = await asyncio.gather(*(core.submit(body) for body in bodies))
    assert [o.status for o in outs] == ["labeled"] * 40 and all(o.label.correct == [True, False] for o in outs)
    assert charges == [40] and sum(labels) == 40 and len(labels) < 40, labels
    assert store.budget().spent == 40 and len(store.labels_since(0, 100)) == 40
    await core.aclose()
