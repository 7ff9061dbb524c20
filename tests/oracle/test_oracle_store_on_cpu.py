"""The SQLite store on its own: idempotency, budget arithmetic, refunds, label order, thread safety."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from coact_verl.oracle.backends import BackendError, Candidate, LabelQuery, LabelResult
from coact_verl.oracle.service.db import Store


def _q(key, prompt_id="p1", step=0):
    return LabelQuery(0, key, prompt_id, "prompt", "gsm8k", step, (Candidate("1", "r", 2), Candidate("2", "r", 1)))


def _label(source="gold"):
    return LabelResult((True, False), "1", source)


def test_reserve_is_idempotent_and_charges_once(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    store.put_gold({"p1": "1"})
    first = store.reserve(_q("a"), needs_gold=True, initial="labeling")
    assert first.status == "labeling" and first.fresh and first.query.gold == "1" and first.budget.spent == 1
    again = store.reserve(_q("a"), needs_gold=True, initial="labeling")
    assert again.status == "labeling" and not again.fresh and again.query.query_id == first.query.query_id
    assert store.finish(first.query.query_id, _label()) == _label()
    assert store.finish(first.query.query_id, _label("other")).source == "gold"  # first label wins
    done = store.reserve(_q("a"), needs_gold=True, initial="labeling")
    assert done.status == "labeled" and done.label == _label() and store.budget().spent == 1
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_gold_is_charged_once_and_over_budget_is_not(tmp_path):
    """``no_gold`` says whether a prompt has gold: it costs a label, once per key; the key sent again after gold
    arrived is labelled under that charge. ``over_budget`` says nothing and costs nothing."""
    store = Store(str(tmp_path / "s.sqlite"))
    store.set_budget(1)
    missing = store.reserve(_q("x", "nogold"), needs_gold=True, initial="labeling")
    assert missing.status == "no_gold" and missing.fresh and store.budget().spent == 1
    assert store.reserve(_q("x", "nogold"), needs_gold=True, initial="labeling").status == "no_gold"
    assert store.budget().spent == 1
    store.put_gold({"p1": "1", "nogold": "5"})
    paid = store.reserve(_q("x", "nogold"), needs_gold=True, initial="labeling")
    assert paid.status == "labeling" and not paid.fresh and store.budget().spent == 1
    over = store.reserve(_q("y"), needs_gold=True, initial="labeling")
    assert over.status == "over_budget" and over.budget.remaining == 0 and store.budget().spent == 1
    store.set_budget(2)
    assert store.reserve(_q("y"), needs_gold=True, initial="labeling").fresh


def test_per_step_budget(tmp_path):
    """The per-step cap counts what the run's current step (moved by the trainer's driver) was charged, whatever
    step the queries name."""
    store = Store(str(tmp_path / "s.sqlite"))
    store.set_budget(None, per_step=2)
    statuses = []
    for i in range(6):
        if i % 3 == 0:
            store.set_step(1, i // 3)
        statuses.append(store.reserve(_q(f"k{i}", step=i), needs_gold=False, initial="pending").status)
    assert statuses == ["pending", "pending", "over_budget"] * 2
    assert store.budget().spent == 4 and store.budget().remaining is None


def test_fail_refunds_and_key_can_be_retried(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    store.set_budget(1)
    res = store.reserve(_q("a"), needs_gold=False, initial="labeling")
    store.fail(res.query.query_id)
    assert store.budget().spent == 0
    assert store.finish(res.query.query_id, _label()) is None  # a refunded query takes no label
    again = store.reserve(_q("a"), needs_gold=False, initial="labeling")
    assert again.fresh and store.budget().spent == 1
    assert [q.key for q in store.unfinished()] == ["a"]


def test_labels_since_in_id_order(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    ids = [store.reserve(_q(f"k{i}"), needs_gold=False, initial="labeling").query.query_id for i in range(5)]
    for qid in reversed(ids):
        store.finish(qid, _label())
    rows = store.labels_since(0, 10)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert [r["key"] for r in rows] == ["k4", "k3", "k2", "k1", "k0"]
    assert [r["key"] for r in store.labels_since(rows[2]["id"], 10)] == ["k1", "k0"]
    assert rows[0]["correct"] == [True, False]


def test_budget_exact_under_threads(tmp_path):
    """64 threads with their own connections race for 50 labels: exactly 50 are granted."""
    store = Store(str(tmp_path / "s.sqlite"))
    store.set_budget(50)
    granted, barrier = [], threading.Barrier(64)

    def worker(t):
        barrier.wait()
        for i in range(4):
            res = store.reserve(_q(f"t{t}-{i}"), needs_gold=False, initial="labeling")
            if res.fresh:
                granted.append(res.query.key)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50 == len(set(granted)) == store.budget().spent
    store.close()


def test_annotator_tokens_are_hashed_and_leases_exclusive(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    a, token_a = store.create_annotator("alice")
    b, _ = store.create_annotator("bob")
    stored = store.conn.execute("SELECT token_hash FROM annotators").fetchall()
    assert all(token_a not in row[0] for row in stored)
    store.reserve(_q("h1"), needs_gold=False, initial="pending")
    store.reserve(_q("h2"), needs_gold=False, initial="pending")
    assert store.next_task(a, 600).key == "h1"
    assert store.next_task(a, 600).key == "h1"  # own lease first
    assert store.next_task(b, 600).key == "h2"
    assert store.leased_task(1, b) is None
    assert store.finish(1, _label(), annotator_id=b) is None  # b does not hold h1
    assert store.finish(1, _label("human"), annotator_id=a).source == "human"
    assert store.next_task(b, 0).key == "h2"


def test_reserve_many_is_reserve_in_order_in_one_transaction(tmp_path):
    """A batch: duplicate keys charge once, the budget runs out mid-batch in order, a failing labeller leaves no
    trace of its query, and the batch is one transaction."""
    store = Store(str(tmp_path / "s.sqlite"))
    store.put_gold({"p1": "1"})
    store.set_budget(4)

    def labeller(query):
        if query.key == "bad":
            raise RuntimeError("judge down")
        return _label()

    batch = [_q("a"), _q("a"), _q("bad"), _q("b"), _q("nogold", "p9"), _q("c"), _q("d")]
    out = store.reserve_many(batch, needs_gold=True, initial="labeling", labeller=labeller)
    assert [getattr(r, "status", "error") for r in out] == [
        "labeled", "labeled", "error", "labeled", "no_gold", "labeled", "over_budget",
    ]  # fmt: skip
    assert isinstance(out[2], BackendError) and "judge down" in str(out[2])
    assert [r.fresh for r in out if not isinstance(r, BackendError)] == [True, False, True, True, True, False]
    assert out[1].query.query_id == out[0].query.query_id and out[1].label == _label()
    assert [r.budget.spent for r in (out[0], out[3], out[4], out[5], out[6])] == [1, 2, 3, 4, 4]
    assert store.budget().spent == 4 and store.status(out[0].query.query_id) == "labeled"
    keys = [row[0] for row in store.conn.execute("SELECT key FROM queries ORDER BY id")]
    assert keys == ["a", "b", "nogold", "c", "d"]  # "bad" was never written
    # One transaction: a query that cannot be stored (a lone surrogate is not UTF-8) rolls the whole batch back.
    store.set_budget(10)
    unstorable = LabelQuery(0, "f", "p1", "\ud800", "gsm8k", 0, _q("f").candidates)
    with pytest.raises(UnicodeEncodeError):
        store.reserve_many([_q("e"), unstorable], needs_gold=True, initial="labeling", labeller=labeller)
    assert store.conn.execute("SELECT COUNT(*) FROM queries WHERE key IN ('e', 'f')").fetchone()[0] == 0
    assert store.budget().spent == 4


def test_background_checkpoints_keep_the_wal_small_under_steady_writes(tmp_path):
    """Back-to-back single-query transactions for a second (as under light, steady load, where group commit
    has nothing to group): the checkpointer must let the log start over, or the WAL grows by every commit's
    pages (about 28 KiB each here, tens of MB a second) until SQLite's backstop checkpoint stalls a writer."""
    path = tmp_path / "s.sqlite"
    store = Store(str(path), checkpoint_every_s=0.05)
    store.put_gold({"p1": "1"})
    wal = Path(f"{path}-wal")
    commits, deadline = 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        store.reserve(_q(f"k{commits}"), needs_gold=True, initial="labeling")
        commits += 1
        time.sleep(0.0002)  # a service does other work between writes
    written = commits * 28 * 1024
    assert commits > 500 and wal.stat().st_size < min(written / 4, 16 * 2**20), (commits, wal.stat().st_size)
    store.close()
    reopened = Store(str(path), checkpoint_every_s=None)
    assert reopened.budget().spent == commits
    reopened.close()


def test_finish_many_is_finish_in_order_in_one_transaction(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    ids = [store.reserve(_q(f"k{i}"), needs_gold=False, initial="labeling").query.query_id for i in range(3)]
    store.fail(ids[2])  # refunded: takes no label
    done = store.finish_many(
        [(ids[0], _label()), (ids[1], _label("judge")), (ids[0], _label("late")), (ids[2], _label())]
    )
    assert [d.source if d else None for d in done] == ["gold", "judge", "gold", None]  # the first label wins
    assert [store.status(i) for i in ids] == ["labeled", "labeled", "failed"]
    assert [r["key"] for r in store.labels_since(0, 10)] == ["k0", "k1"]
