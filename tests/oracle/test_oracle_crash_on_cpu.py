"""SIGKILL the service while a client streams queries; restart it on the same database."""

from __future__ import annotations

import asyncio
import time

import pytest
from oracle_testlib import ADMIN, TRAINER, Service, query_body

from coact_verl.oracle import OracleClient
from coact_verl.oracle.backends import Candidate, LabelQuery
from coact_verl.oracle.service.db import Store

KEYS = 300
SUBMITTERS = 8


@pytest.mark.parametrize("mode", [["--equivalence", "exact"], []], ids=["one-transaction", "two-phase"])
async def test_sigkill_loses_nothing_and_duplicates_nothing(service_factory, mode):
    """The cheap ``exact`` equivalence labels inside the charging transaction; the default (math-verify capable)
    one charges, checks in a thread, then stores the label, and may be killed in between: the restart must
    finish those labels."""
    svc = service_factory("--budget-total", "100000", *mode)
    client = OracleClient(svc.url, TRAINER, request_timeout_s=1.0, max_wait_s=1.5, retries=2, backoff_s=0.02)
    acked: dict[str, tuple] = {}  # key → label verdicts the client saw
    acked_before_kill: set[str] = set()
    unavailable: list[str] = []
    restarted = asyncio.Event()
    labeled_after_restart = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(KEYS):
        queue.put_nowait(i)

    async def submitter() -> None:
        nonlocal labeled_after_restart
        while not queue.empty():
            i = queue.get_nowait()
            result = await client.query(**query_body(i, key=f"crash-{i}"))
            if result.status == "labeled":
                acked[f"crash-{i}"] = result.label.correct
                labeled_after_restart += restarted.is_set()
            else:
                assert result.status == "unavailable", result
                unavailable.append(f"crash-{i}")
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(submitter()) for _ in range(SUBMITTERS)]
    while len(acked) < 100:
        await asyncio.sleep(0.005)
    await asyncio.to_thread(svc.kill)  # SIGKILL while requests are in flight
    acked_before_kill = set(acked)
    await asyncio.sleep(0.3)  # the client keeps submitting into the outage
    await asyncio.to_thread(svc.restart)
    restarted.set()
    await asyncio.gather(*tasks)
    assert unavailable, "the outage was not noticed"
    assert labeled_after_restart > 0, "the client did not carry on after the restart"

    async with OracleClient(svc.url, ADMIN, max_wait_s=10) as admin:
        stored = {r["key"]: tuple(r["label"]["correct"]) for r in (await admin.labels(0, 5000))["labels"]}
        assert acked_before_kill <= set(stored), "acknowledged labels were lost"
        assert all(stored[k] == v for k, v in acked.items())
        spent_before = (await admin.budget())["spent"]
        assert spent_before == len(stored)  # charged exactly once per stored label
        # Re-submit every key (acknowledged or not): nothing is charged twice, every key ends labelled once.
        again = await client.query_many([query_body(i, key=f"crash-{i}") for i in range(KEYS)], concurrency=16)
        assert [r.status for r in again] == ["labeled"] * KEYS
        assert all(again[int(k.split("-")[1])].label.correct == v for k, v in stored.items())
        labels = (await admin.labels(0, 5000))["labels"]
        assert len(labels) == KEYS == len({r["key"] for r in labels})
        assert (await admin.budget())["spent"] == KEYS
    await client.aclose()


def test_charged_but_unlabelled_queries_are_labelled_on_start(tmp_path, gold_file):
    """A query charged just before a crash (no label yet) is labelled when the service starts again."""
    db = tmp_path / "oracle.sqlite"
    store = Store(str(db))
    store.put_gold({"p1": "1001"})
    query = LabelQuery(0, "k1", "p1", "q", "gsm8k", 0, (Candidate("1001", "r"), Candidate("3", "r")))
    assert store.reserve(query, needs_gold=True, initial="labeling").status == "labeling"
    store.close()
    svc = Service(db=db, log=tmp_path / "o.log", args=[], backend="gold").start()
    try:
        with svc.client() as c:
            deadline = time.monotonic() + 10
            while not (labels := c.get("/v1/labels").json()["labels"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [(r["key"], r["label"]["correct"]) for r in labels] == [("k1", [True, False])]
            same = {"key": "k1", "prompt_id": "p1", "prompt": "q", "task": "gsm8k", "step": 0,
                    "candidates": [{"answer": "1001", "response": "r"}, {"answer": "3", "response": "r"}]}  # fmt: skip
            again = c.post("/v1/queries", json=same).json()
            assert again["status"] == "labeled" and again["budget"]["spent"] == 1
            assert c.post("/v1/queries", json=query_body(1, key="k1")).status_code == 409  # another body
    finally:
        svc.stop()
