"""Comparison votes, coactive edits, annotator quality and training pairs against real services.

Simulated users have η ∈ {0.2, 0.5, 0.8, 0.95} (attentive: picks the better response; otherwise a coin flip)
and the stronger model's response is the better one with probability μ = 0.8. Vote counts come from the
Cramér–Rao bound (``votes_needed``): with μ known and 10% control votes, the standard error of η̂ for η = 0.2 is
0.034 with 2,000 votes, so ±0.05 would be only 1.47 SE (even all-control votes give 0.022, i.e. 2.28 SE). Each
user therefore casts the votes that make ±0.05 equal 2.5 SE, and at least 2,000: 5,775 / 5,109 / 3,578 / 2,000
(16,462 in all, SE 0.020 / 0.020 / 0.020 / 0.018).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from dataclasses import dataclass

import numpy as np
import pytest
from oracle_testlib import ADMIN, TRAINER, Service, query_body

from coact_verl.feedback import SimulatedAnnotatorPool, Vote, estimate_attentiveness, eta_standard_error, votes_needed
from coact_verl.feedback.pairs_from_votes import VoteRecord
from coact_verl.oracle import OracleClient, SyncOracleClient
from coact_verl.oracle.cli import add_oracle_subcommand, settings_from_args
from coact_verl.oracle.service.db import Store

ETAS = (0.2, 0.5, 0.8, 0.95)
MU = 0.8
CONTROL = 0.1
COUNTS = [max(2000, votes_needed(eta, 0.05, MU, CONTROL, z=2.5)) for eta in ETAS]
BATCH = 1000
NEW_ENDPOINTS = [
    ("POST", "/v1/votes"),
    ("POST", "/v1/votes/batch"),
    ("POST", "/v1/edits"),
    ("GET", "/v1/feedback/pairs"),
    ("GET", "/v1/annotators/quality"),
]


def vote_body(i: int, *, key: str | None = None, stronger="a", picked="a", better=None) -> dict:
    return {"key": key or f"v{i}", "prompt_id": f"p{i}", "prompt": f"What is {i}?", "task": "gsm8k",
            "response_a": f"answer A {i}", "response_b": f"answer B {i}", "stronger": stronger, "picked": picked,
            "better": better}  # fmt: skip


def edit_body(i: int, *, key: str | None = None, original="x = 1", edited="x = 2") -> dict:
    return {"key": key or f"e{i}", "prompt_id": f"p{i}", "prompt": f"Fix {i}", "task": "math", "original": original,
            "edited": edited}  # fmt: skip


def simulated_bodies(sim, seed: int) -> list[dict]:
    """Vote bodies for simulated votes: the stronger model's response on a random side, the better response
    reading ``good …`` and the worse ``bad …``, ``better`` set on control votes."""
    rng = np.random.default_rng(seed)
    bodies = []
    for j, (vote, a_better) in enumerate(zip(sim.votes, sim.a_better, strict=True)):
        stronger = "a" if rng.random() < 0.5 else "b"
        weaker = "b" if stronger == "a" else "a"
        good = stronger if a_better else weaker
        texts = {good: f"good {j}", ("b" if good == "a" else "a"): f"bad {j}"}
        bodies.append({"key": f"sim-{j}", "prompt_id": f"p{j % 50}", "prompt": f"Question {j % 50}", "task": "gsm8k",
                       "response_a": texts["a"], "response_b": texts["b"], "stronger": stronger,
                       "picked": stronger if vote.picked_a else weaker,
                       "better": None if vote.a_better is None else good, "user": vote.user})  # fmt: skip
    return bodies


def all_pairs(client: SyncOracleClient, min_eta: float | None, limit: int = BATCH) -> tuple[list[dict], int]:
    """Every pair, paging until the cursor stops; also the number of pages."""
    pairs, since, pages = [], 0, 0
    while True:
        page = client.feedback_pairs(since, limit, min_eta)
        pages += 1
        pairs += page["pairs"]
        if page["next_since_id"] == since:
            return pairs, pages
        since = page["next_since_id"]


@dataclass
class Simulation:
    given: Service  # started with --vote-mu 0.8
    estimated: Service  # μ estimated from the votes
    true_eta: dict[int, float]  # annotator id → η
    votes: list[Vote]  # the votes as the EM sees them (annotator ids as users)


@pytest.fixture(scope="module")
def simulation(tmp_path_factory) -> Simulation:
    tmp = tmp_path_factory.mktemp("votes")
    pool = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=2024)
    sim = pool.sample(COUNTS, control_fraction=CONTROL)
    bodies = simulated_bodies(sim, seed=7)
    services = []
    for name, args in (("given", ["--vote-mu", str(MU)]), ("estimated", [])):
        svc = Service(db=tmp / f"{name}.sqlite", log=tmp / f"{name}.log", args=args, backend="gold").start()
        services.append(svc)
        with svc.client(ADMIN) as admin:
            made = [admin.post("/v1/annotators", json={"name": u.user_id}).json() for u in pool.users]
        ids = {u.user_id: m["id"] for u, m in zip(pool.users, made, strict=True)}
        for user, annotator in zip(pool.users, made, strict=True):
            mine = [{k: v for k, v in b.items() if k != "user"} for b in bodies if b["user"] == user.user_id]
            with SyncOracleClient(svc.url, annotator["token"], request_timeout_s=30, max_wait_s=60) as client:
                for start in range(0, len(mine), BATCH):
                    out = client.submit_votes(mine[start : start + BATCH])
                    assert out is not None and out["created"] == len(mine[start : start + BATCH])
    votes = [Vote(ids[v.user], v.picked_a, v.a_better) for v in sim.votes]
    yield Simulation(services[0], services[1], {ids[u]: e for u, e in pool.true_eta.items()}, votes)
    for svc in services:
        svc.stop()


def _quality(svc: Service) -> dict:
    with SyncOracleClient(svc.url, TRAINER, request_timeout_s=30, max_wait_s=60) as client:
        return client.annotator_quality()


def test_vote_counts_give_two_and_a_half_standard_errors():
    assert COUNTS == [5775, 5109, 3578, 2000]
    for eta, n in zip(ETAS, COUNTS, strict=True):
        assert 0.05 / eta_standard_error(eta, n, MU, CONTROL) >= 2.5
    assert 0.05 / eta_standard_error(0.2, 2000, MU, CONTROL) < 1.5  # why 2,000 votes per user are not enough
    assert 0.05 / eta_standard_error(0.2, 2000, control_fraction=1.0) < 2.5  # nor are controls alone


def test_eta_recovered_within_005_with_mu_given(simulation):
    quality = _quality(simulation.given)
    assert quality["mu"] == MU and quality["mu_given"] and quality["votes"] == sum(COUNTS)
    rows = {a["id"]: a for a in quality["annotators"]}
    assert [rows[i]["votes"] for i in sorted(rows)] == COUNTS
    assert all(0.05 < rows[i]["control_votes"] / rows[i]["votes"] < 0.15 for i in rows)
    errors = {i: rows[i]["eta"] - eta for i, eta in simulation.true_eta.items()}
    print("eta errors, mu given:", {simulation.true_eta[i]: round(e, 4) for i, e in errors.items()})
    assert all(abs(e) <= 0.05 for e in errors.values()), errors


def test_eta_and_mu_estimated_with_control_votes(simulation):
    """μ is pinned by the 10% controls (SD of μ̂ ≈ 0.009 over seeds); the SD of η̂ grows to ≈ 0.024."""
    quality = _quality(simulation.estimated)
    assert not quality["mu_given"]
    rows = {a["id"]: a["eta"] for a in quality["annotators"]}
    reference = estimate_attentiveness(simulation.votes, mu=None)  # the library on the same votes
    assert rows == pytest.approx(reference.eta, abs=1e-6) and quality["mu"] == pytest.approx(reference.mu, abs=1e-6)
    errors = {i: rows[i] - eta for i, eta in simulation.true_eta.items()}
    print("eta errors, mu estimated:", {simulation.true_eta[i]: round(e, 4) for i, e in errors.items()},
          "mu error:", round(quality["mu"] - MU, 4))  # fmt: skip
    assert abs(quality["mu"] - MU) <= 0.03
    assert all(abs(e) <= 0.075 for e in errors.values()), errors


def test_filtering_raises_pair_accuracy(simulation):
    quality = {a["id"]: a["eta"] for a in _quality(simulation.given)["annotators"]}
    with SyncOracleClient(simulation.given.url, TRAINER, request_timeout_s=30, max_wait_s=60) as client:
        everything, pages = all_pairs(client, 0.0)
        kept, _ = all_pairs(client, 0.5)
        default, _ = all_pairs(client, None)
        top, _ = all_pairs(client, 0.9)
    assert pages == -(-sum(COUNTS) // BATCH) + 1  # the last page is empty and repeats the cursor
    assert len(everything) == sum(COUNTS) and [p["id"] for p in everything] == list(range(1, sum(COUNTS) + 1))
    assert default == kept  # vote_min_eta defaults to 0.5
    assert {p["annotator"] for p in kept} == {i for i, eta in quality.items() if eta >= 0.5}
    assert all(p["weight"] == quality[p["annotator"]] and p["kind"] == "vote" for p in everything)
    assert len(top) == sum(1 for p in everything if quality[p["annotator"]] >= 0.9)

    def accuracy(pairs):
        return np.mean([p["chosen"].startswith("good") and p["rejected"].startswith("bad") for p in pairs])

    acc_all, acc_kept = accuracy(everything), accuracy(kept)
    print(f"pair accuracy: all {acc_all:.3f} ({len(everything)}), eta >= 0.5 {acc_kept:.3f} ({len(kept)})")
    assert acc_kept > acc_all + 0.05


def test_filtered_votes_advance_the_cursor(simulation):
    """A page of votes whose annotators are all below ``min_eta`` is empty, yet moves the cursor on."""
    low = min(simulation.true_eta, key=simulation.true_eta.get)
    assert low == 1  # the η = 0.2 user submitted first: its votes are ids 1 … 5,775
    with SyncOracleClient(simulation.given.url, TRAINER) as client:
        page = client.feedback_pairs(0, 100, 0.5)
        assert page == {"pairs": [], "next_since_id": 100}
        boundary = COUNTS[0] + COUNTS[1]  # last vote of the η = 0.5 user, filtered out at 0.7
        assert [p["id"] for p in client.feedback_pairs(boundary - 1, 2, 0.7)["pairs"]] == [boundary + 1]
        assert client.feedback_pairs(sum(COUNTS), 10, 0.0) == {"pairs": [], "next_since_id": sum(COUNTS)}


@pytest.fixture
def feedback_service(service_factory):
    svc = service_factory("--vote-mu", "0.75")
    with svc.client(ADMIN) as admin:
        tokens = [admin.post("/v1/annotators", json={"name": n}).json()["token"] for n in ("ann-a", "ann-b")]
    return svc, tokens


def test_votes_are_idempotent_per_annotator_and_role_checked(feedback_service):
    svc, (tok_a, tok_b) = feedback_service
    with svc.client(tok_a) as a, svc.client(tok_b) as b:
        first = a.post("/v1/votes", json=vote_body(1)).json()
        assert first["created"] and first["picked"] == "a" and first["better"] is None
        replay = a.post("/v1/votes", json=vote_body(1, picked="b")).json()
        assert replay == {**first, "created": False}  # the stored vote, not the replayed body
        other = b.post("/v1/votes", json=vote_body(1)).json()
        assert other["created"] and other["id"] != first["id"]  # keys are scoped per annotator
        batch = a.post("/v1/votes/batch", json={"votes": [vote_body(2), vote_body(2), vote_body(1)]}).json()
        assert batch["created"] == 1 and [v["created"] for v in batch["votes"]] == [True, False, False]
        assert batch["votes"][1]["id"] == batch["votes"][0]["id"] and batch["votes"][2]["id"] == first["id"]
        control = a.post("/v1/votes", json=vote_body(3, stronger="b", picked="a", better="a")).json()
        assert (control["stronger"], control["picked"], control["better"]) == ("b", "a", "a")
        annotator_view = [first, replay, other, batch, control]
        for client in (a, b):
            for method, path in NEW_ENDPOINTS[3:]:
                assert client.request(method, path).status_code == 403
    assert "eta" not in str(annotator_view) and "weight" not in str(annotator_view)
    for token in (TRAINER, ADMIN):
        with svc.client(token) as c:
            assert c.post("/v1/votes", json=vote_body(9)).status_code == 403
            assert c.post("/v1/votes/batch", json={"votes": [vote_body(9)]}).status_code == 403
            assert c.post("/v1/edits", json=edit_body(9)).status_code == 403
            quality = c.get("/v1/annotators/quality").json()
            assert [(q["name"], q["votes"], q["control_votes"]) for q in quality["annotators"]] == [
                ("ann-a", 3, 1), ("ann-b", 1, 0)]  # fmt: skip
            assert quality["mu"] == 0.75 and quality["votes"] == 4
            pairs = c.get("/v1/feedback/pairs", params={"min_eta": 0}).json()["pairs"]
            assert len(pairs) == 4  # one row per key and annotator
    for method, path in NEW_ENDPOINTS:
        with svc.client(token="") as c:
            assert c.request(method, path, json=vote_body(1)).status_code == 401
        with svc.client(token="wrong") as c:
            assert c.request(method, path, json=vote_body(1)).status_code == 401


def test_invalid_votes_and_edits_are_422_and_store_nothing(feedback_service):
    svc, (tok_a, _) = feedback_service
    bad_votes = [
        {**vote_body(1), "stronger": "c"},
        {**vote_body(1), "picked": None},
        {**vote_body(1), "better": "both"},
        {**vote_body(1), "response_b": " answer A 1 "},  # the same response twice
        {**vote_body(1), "task": "poetry"},
        {**vote_body(1), "key": ""},
        {**vote_body(1), "key": "k" * 513},
        {**vote_body(1), "prompt": "x" * 200_001},
        {**vote_body(1), "extra": 1},
        {k: v for k, v in vote_body(1).items() if k != "prompt"},
    ]
    bad_edits = [
        edit_body(1, edited="x = 1"),
        edit_body(1, edited="  x = 1\n"),
        edit_body(1, edited="   "),
        {**edit_body(1), "gold": True},
    ]
    with svc.client(tok_a) as a:
        for body in bad_votes:
            assert a.post("/v1/votes", json=body).status_code == 422, body
        assert a.post("/v1/votes/batch", json={"votes": []}).status_code == 422
        assert a.post("/v1/votes/batch", json={"votes": [vote_body(i) for i in range(1001)]}).status_code == 422
        assert a.post("/v1/votes/batch", json={"votes": [vote_body(5), bad_votes[0]]}).status_code == 422
        for body in bad_edits:
            assert a.post("/v1/edits", json=body).status_code == 422, body
    with svc.client() as trainer:
        assert trainer.get("/v1/feedback/pairs", params={"min_eta": 0}).json() == {"pairs": [], "next_since_id": 0}
        for params in ({"min_eta": 1.5}, {"min_eta": "nan"}, {"limit": 0}, {"limit": 1001}, {"since_id": -1}):
            assert trainer.get("/v1/feedback/pairs", params=params).status_code == 422, params
        assert trainer.get("/v1/annotators/quality").json() == {"mu": 0.75, "mu_given": True, "votes": 0,
                                                                "annotators": []}  # fmt: skip


def test_batch_is_one_transaction(tmp_path):
    """A failure inside a batch rolls back the votes before it."""
    store = Store(str(tmp_path / "s.sqlite"))
    annotator, _ = store.create_annotator("a")
    vote = VoteRecord(0, None, "p", "q", "gsm8k", "x", "y", "a", "b")
    with pytest.raises(sqlite3.IntegrityError):
        store.put_votes(annotator, [("k1", vote), (None, vote)])  # type: ignore[list-item]
    assert store.feedback_since(0, 10) == [] and store.vote_counts() == {}
    assert [s.created for s in store.put_votes(annotator, [("k1", vote), ("k1", vote)])] == [True, False]
    assert store.vote_counts() == {annotator: (0, 1, 0, 0)}
    store.close()


async def test_edit_is_a_pair_with_chosen_edited(feedback_service):
    svc, (tok_a, _) = feedback_service
    async with OracleClient(svc.url, tok_a) as annotator:
        stored = await annotator.submit_edit(**edit_body(1, original="2 + 2 = 5", edited="2 + 2 = 4"))
        assert stored["created"] and stored["task"] == "math"
        replay = await annotator.submit_edit(**edit_body(1, original="2 + 2 = 5", edited="2 + 2 = 22"))
        assert replay == {**stored, "created": False}
        assert await annotator.submit_edit(**edit_body(2, edited="x = 1")) is None  # unchanged: 422
        vote = await annotator.submit_vote(**vote_body(3, picked="b"))
        assert vote["created"]
        assert await annotator.feedback_pairs() is None  # annotators may not read pairs (403)
    async with OracleClient(svc.url, TRAINER) as trainer:
        page = await trainer.feedback_pairs(0, 10, 0.0)
        edit, vote_pair = page["pairs"]
        assert edit == {"id": stored["id"], "kind": "edit", "prompt_id": "p1", "prompt": "Fix 1", "task": "math",
                        "chosen": "2 + 2 = 4", "rejected": "2 + 2 = 5", "weight": 1.0, "annotator": 1}  # fmt: skip
        assert (vote_pair["chosen"], vote_pair["rejected"]) == ("answer B 3", "answer A 3")
        quality = await trainer.annotator_quality()
        assert vote_pair["weight"] == quality["annotators"][0]["eta"]
        assert page["next_since_id"] == vote_pair["id"]
        # η̂ = 0 (one vote for the weaker side): the default threshold drops the vote, never the edit
        assert [p["kind"] for p in (await trainer.feedback_pairs(0, 10))["pairs"]] == ["edit"]


def test_labels_carry_prompt_and_task(service_factory):
    svc = service_factory()
    with svc.client() as trainer:
        assert trainer.post("/v1/queries", json={**query_body(3), "task": "math"}).json()["status"] == "labeled"
        (record,) = trainer.get("/v1/labels").json()["labels"]
    assert (record["prompt_id"], record["prompt"], record["task"], record["key"]) == (
        "p3",
        "What is 1003?",
        "math",
        "k3",
    )
    assert set(record) >= {"id", "query_id", "step", "label", "annotator", "created_at"}


def test_serve_options():
    parser = argparse.ArgumentParser()
    add_oracle_subcommand(parser.add_subparsers(dest="command"))
    base = ["oracle", "serve", "--db", "o.sqlite"]
    defaults = settings_from_args(parser.parse_args(base))
    assert (defaults.vote_mu, defaults.vote_min_eta) == (None, 0.5)
    given = settings_from_args(parser.parse_args([*base, "--vote-mu", "0.8", "--vote-min-eta", "0.3"]))
    assert (given.vote_mu, given.vote_min_eta) == (0.8, 0.3)
    for bad in (["--vote-mu", "0.5"], ["--vote-mu", "1.2"], ["--vote-mu", "nan"], ["--vote-min-eta", "-0.1"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, *bad])


async def test_sigkill_loses_no_acknowledged_vote(service_factory):
    """Votes stream in batches while the service is killed and restarted; failed batches are sent again."""
    svc = service_factory()
    with svc.client(ADMIN) as admin:
        token = admin.post("/v1/annotators", json={"name": "crash"}).json()["token"]
    client = OracleClient(svc.url, token, request_timeout_s=1.0, max_wait_s=1.5, retries=2, backoff_s=0.02)
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for start in range(0, 3000, 25):
        queue.put_nowait([vote_body(i, key=f"c{i}", picked="ab"[i % 2]) for i in range(start, start + 25)])
    acked: set[str] = set()
    failures = 0

    async def submitter() -> None:
        nonlocal failures
        while not queue.empty():
            batch = queue.get_nowait()
            out = await client.submit_votes(batch)
            if out is None:
                failures += 1
                queue.put_nowait(batch)
                await asyncio.sleep(0.05)
            else:
                acked.update(v["key"] for v in out["votes"])

    tasks = [asyncio.create_task(submitter()) for _ in range(4)]
    while len(acked) < 500:
        await asyncio.sleep(0.005)
    await asyncio.to_thread(svc.kill)
    acked_before_kill = set(acked)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(svc.restart)
    await asyncio.gather(*tasks)
    await client.aclose()
    assert failures > 0, "the outage was not noticed"
    with SyncOracleClient(svc.url, TRAINER, max_wait_s=30, request_timeout_s=10) as trainer:
        pairs, _ = all_pairs(trainer, 0.0)
        quality = trainer.annotator_quality()
    stored = [p["prompt_id"] for p in pairs]
    assert len(stored) == len(set(stored)) == 3000  # every key once: none lost, none doubled by a resend
    assert {f"p{k[1:]}" for k in acked_before_kill} <= set(stored)
    assert quality["votes"] == 3000
