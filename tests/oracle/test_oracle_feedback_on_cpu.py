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
import functools
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from oracle_testlib import ADMIN, TRAINER, Service, query_body

from coact_verl.feedback import SimulatedAnnotatorPool, Vote, estimate_attentiveness, eta_standard_error, votes_needed
from coact_verl.oracle import OracleClient, SyncOracleClient
from coact_verl.oracle.cli import add_oracle_subcommand, settings_from_args
from coact_verl.oracle.service.comparison_store import NewComparison, UnknownTicket, VoteConflict
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


def comparison_body(i: int, *, stronger="a", better=None, annotator=None) -> dict:
    return {"prompt_id": f"p{i}", "prompt": f"What is {i}?", "task": "gsm8k", "response_a": f"answer A {i}",
            "response_b": f"answer B {i}", "stronger": stronger, "better": better, "annotator": annotator}  # fmt: skip


def edit_body(i: int, *, key: str | None = None, original="x = 1", edited="x = 2") -> dict:
    return {"key": key or f"e{i}", "prompt_id": f"p{i}", "prompt": f"Fix {i}", "task": "math", "original": original,
            "edited": edited}  # fmt: skip


def create_comparisons(svc: Service, bodies: list[dict]) -> list[int]:
    ids = []
    with svc.client(ADMIN, timeout_s=60) as admin:
        for start in range(0, len(bodies), BATCH):
            reply = admin.post("/v1/comparisons", json={"comparisons": bodies[start : start + BATCH]})
            assert reply.status_code == 200, reply.text
            ids += reply.json()["ids"]
    return ids


def lease(client: httpx.Client, limit: int = BATCH) -> list[dict]:
    reply = client.get("/v1/comparisons/next", params={"limit": limit})
    assert reply.status_code == 200, reply.text
    return reply.json()["comparisons"]


def simulated_comparisons(sim, annotator_ids: dict[str, int], seed: int) -> tuple[list[dict], dict[int, str]]:
    """A comparison per simulated vote, in the queue of the vote's annotator: the stronger model's response on a
    random side, the better response reading ``good …`` and the worse ``bad …``, ``better`` set on controls.
    Also, per vote, the side the simulated annotator picks."""
    rng = np.random.default_rng(seed)
    bodies, picks = [], {}
    for j, (vote, a_better) in enumerate(zip(sim.votes, sim.a_better, strict=True)):
        stronger = "a" if rng.random() < 0.5 else "b"
        weaker = "b" if stronger == "a" else "a"
        good = stronger if a_better else weaker
        texts = {good: f"good {j}", ("b" if good == "a" else "a"): f"bad {j}"}
        bodies.append({"prompt_id": f"p{j % 50}", "prompt": f"Question {j % 50}", "task": "gsm8k",
                       "response_a": texts["a"], "response_b": texts["b"], "stronger": stronger,
                       "better": None if vote.a_better is None else good,
                       "annotator": annotator_ids[vote.user]})  # fmt: skip
        picks[j] = stronger if vote.picked_a else weaker
    return bodies, picks


def _sim_pick(picks: dict[int, str], comparison: dict) -> str:
    return picks[int(comparison["response_a"].split()[1])]


def vote_on_queue(svc: Service, token: str, pick) -> int:
    """Lease the annotator's whole queue and vote ``pick(comparison)`` on each (keys ``v-<ticket>``)."""
    votes = 0
    with svc.client(token, timeout_s=60) as client:
        while served := lease(client):
            batch = [{"key": f"v-{c['ticket']}", "ticket": c["ticket"], "picked": pick(c)} for c in served]
            reply = client.post("/v1/votes/batch", json={"votes": batch})
            assert reply.status_code == 200 and reply.json()["created"] == len(batch), reply.text
            votes += len(batch)
    return votes


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
    services = []
    for name, args in (("given", ["--vote-mu", str(MU)]), ("estimated", [])):
        svc = Service(db=tmp / f"{name}.sqlite", log=tmp / f"{name}.log", args=args, backend="gold").start()
        services.append(svc)
        with svc.client(ADMIN) as admin:
            made = [admin.post("/v1/annotators", json={"name": u.user_id}).json() for u in pool.users]
        ids = {u.user_id: m["id"] for u, m in zip(pool.users, made, strict=True)}
        bodies, picks = simulated_comparisons(sim, ids, seed=7)
        create_comparisons(svc, bodies)
        for annotator in made:  # one annotator after the other: each one's votes get consecutive ids
            mine = sum(1 for b in bodies if b["annotator"] == annotator["id"])
            assert vote_on_queue(svc, annotator["token"], functools.partial(_sim_pick, picks)) == mine
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


def _vote(ticket: str, picked: str = "a", key: str | None = None) -> dict:
    return {"key": key or f"k-{ticket}", "ticket": ticket, "picked": picked}


def test_votes_are_idempotent_per_annotator_and_role_checked(feedback_service):
    svc, (tok_a, tok_b) = feedback_service
    create_comparisons(svc, [comparison_body(1), comparison_body(2, stronger="b"), comparison_body(3, better="b")])
    with svc.client(tok_a) as a, svc.client(tok_b) as b:
        served_a = lease(a, 10)
        assert len(served_a) == 3 and lease(a, 10) == served_a  # unvoted leases come back, same tickets
        assert set(served_a[0]) == {"ticket", "prompt_id", "prompt", "task", "response_a", "response_b"}
        # served in random order; by prompt: p1 and p2 plain comparisons, p3 the control
        t1, t2, t3 = (c["ticket"] for c in sorted(served_a, key=lambda c: c["prompt_id"]))
        first = a.post("/v1/votes", json=_vote(t1, key="v1")).json()
        assert first["created"] and first["picked"] == "a" and set(first) == {
            "id", "key", "ticket", "created", "prompt_id", "task", "picked", "created_at"}  # fmt: skip
        replay = a.post("/v1/votes", json=_vote(t1, key="v1")).json()
        assert replay == {**first, "created": False}
        assert a.post("/v1/votes", json=_vote(t1, "b", key="v1")).status_code == 409  # same key, other body
        assert a.post("/v1/votes", json=_vote(t1, key="v1-again")).status_code == 409  # one vote per ticket
        (served_b,) = [c for c in lease(b, 10) if c["prompt_id"] == "p1"]
        assert served_b["ticket"] != t1
        assert b.post("/v1/votes", json=_vote(t1, key="v1")).status_code == 404  # another annotator's ticket
        other = b.post("/v1/votes", json=_vote(served_b["ticket"], key="v1")).json()
        assert other["created"] and other["id"] != first["id"]  # keys are scoped per annotator
        batch = a.post("/v1/votes/batch", json={"votes": [_vote(t2, key="v2"), _vote(t2, key="v2"),
                                                          _vote(t1, key="v1")]}).json()  # fmt: skip
        assert batch["created"] == 1 and [v["created"] for v in batch["votes"]] == [True, False, False]
        assert batch["votes"][1]["id"] == batch["votes"][0]["id"] and batch["votes"][2]["id"] == first["id"]
        control = a.post("/v1/votes", json=_vote(t3, "b", key="v3")).json()
        assert control["created"] and lease(a, 10) == []
        annotator_view = [served_a, first, replay, other, batch, control]
        for client in (a, b):
            for method, path in NEW_ENDPOINTS[3:]:
                assert client.request(method, path).status_code == 403
            assert client.post("/v1/comparisons", json={"comparisons": [comparison_body(9)]}).status_code == 403
    assert not any(word in str(annotator_view) for word in ("eta", "weight", "stronger", "better", "control"))
    for token in (TRAINER, ADMIN):
        with svc.client(token) as c:
            assert c.post("/v1/votes", json=_vote(t1)).status_code == 403
            assert c.post("/v1/votes/batch", json={"votes": [_vote(t1)]}).status_code == 403
            assert c.post("/v1/edits", json=edit_body(9)).status_code == 403
            assert c.get("/v1/comparisons/next").status_code == 403
            quality = c.get("/v1/annotators/quality").json()
            assert [(q["name"], q["votes"], q["control_votes"]) for q in quality["annotators"]] == [
                ("ann-a", 3, 1), ("ann-b", 1, 0)]  # fmt: skip
            assert quality["mu"] == 0.75 and quality["votes"] == 4
            pairs = c.get("/v1/feedback/pairs", params={"min_eta": 0}).json()["pairs"]
            assert len(pairs) == 4  # one row per key and annotator
    for method, path in NEW_ENDPOINTS:
        with svc.client(token="") as c:
            assert c.request(method, path, json=_vote(t1)).status_code == 401
        with svc.client(token="wrong") as c:
            assert c.request(method, path, json=_vote(t1)).status_code == 401


def test_invalid_votes_and_edits_are_422_and_store_nothing(feedback_service):
    svc, (tok_a, _) = feedback_service
    create_comparisons(svc, [comparison_body(1)])
    with svc.client(tok_a) as a:
        (served,) = lease(a)
        good = _vote(served["ticket"])
        bad_votes = [
            {**good, "picked": "c"},
            {**good, "picked": None},
            {**good, "stronger": "a"},  # the side of the stronger model is the service's record
            {**good, "better": "a"},  # and so is a control's better side
            {**good, "key": ""},
            {**good, "key": "k" * 513},
            {**good, "extra": 1},
            {k: v for k, v in good.items() if k != "ticket"},
        ]
        for body in bad_votes:
            assert a.post("/v1/votes", json=body).status_code == 422, body
        assert a.post("/v1/votes/batch", json={"votes": []}).status_code == 422
        assert a.post("/v1/votes/batch", json={"votes": [good] * 1001}).status_code == 422
        assert a.post("/v1/votes/batch", json={"votes": [good, bad_votes[0]]}).status_code == 422
        assert a.post("/v1/votes/batch", json={"votes": [good, _vote("no-such-ticket")]}).status_code == 404
        for body in [
            edit_body(1, edited="x = 1"),
            edit_body(1, edited="  x = 1\n"),
            edit_body(1, edited="   "),
            {**edit_body(1), "gold": True},
        ]:
            assert a.post("/v1/edits", json=body).status_code == 422, body
    with svc.client(ADMIN) as admin:
        for body in [
            {**comparison_body(2), "stronger": "c"},
            {**comparison_body(2), "better": "both"},
            {**comparison_body(2), "response_b": " answer A 2 "},  # the same response twice
            {**comparison_body(2), "task": "poetry"},
            {**comparison_body(2), "prompt": "x" * 200_001},
            {**comparison_body(2), "annotator": 0},
        ]:
            assert admin.post("/v1/comparisons", json={"comparisons": [body]}).status_code == 422, body
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
    store.create_comparisons([NewComparison("p", "q", "gsm8k", "x", "y", "a")])
    (served,) = store.lease_comparisons(annotator, 10)
    with pytest.raises(UnknownTicket):
        store.put_votes(annotator, [("k1", served.ticket, "b"), ("k2", "nope", "a")])
    assert store.feedback_since(0, 10) == [] and store.vote_counts() == {}
    stored = store.put_votes(annotator, [("k1", served.ticket, "b"), ("k1", served.ticket, "b")])
    assert [s.created for s in stored] == [True, False]
    assert store.vote_counts() == {annotator: (0, 1, 0, 0)}
    with pytest.raises(VoteConflict):
        store.put_votes(annotator, [("k1", served.ticket, "a")])
    store.close()


async def test_edit_is_a_pair_weighted_by_eta_or_trust(feedback_service):
    svc, (tok_a, _) = feedback_service
    create_comparisons(svc, [comparison_body(3)])
    async with OracleClient(svc.url, tok_a) as annotator:
        stored = await annotator.submit_edit(**edit_body(1, original="2 + 2 = 5", edited="2 + 2 = 4"))
        assert stored["created"] and stored["task"] == "math"
        replay = await annotator.submit_edit(**edit_body(1, original="2 + 2 = 5", edited="2 + 2 = 4"))
        assert replay == {**stored, "created": False}
        assert await annotator.submit_edit(**edit_body(2, edited="x = 1")) is None  # unchanged: 422
        assert await annotator.feedback_pairs() is None  # annotators may not read pairs (403)
    with svc.client(tok_a) as a:
        assert a.post("/v1/edits", json=edit_body(1, original="2 + 2 = 5", edited="2 + 2 = 22")).status_code == 409
        (served,) = lease(a)
        vote = a.post("/v1/votes", json=_vote(served["ticket"], "b")).json()  # for the weaker side
    async with OracleClient(svc.url, TRAINER) as trainer:
        # η̂ = 0 (one vote for the weaker side): the default threshold drops the vote and the edit
        assert (await trainer.feedback_pairs(0, 10))["pairs"] == []
        page = await trainer.feedback_pairs(0, 10, 0.0)
        edit, vote_pair = page["pairs"]
        assert edit == {"id": stored["id"], "kind": "edit", "prompt_id": "p1", "prompt": "Fix 1", "task": "math",
                        "chosen": "2 + 2 = 4", "rejected": "2 + 2 = 5", "weight": vote_pair["weight"],
                        "annotator": 1}  # fmt: skip
        assert (vote_pair["chosen"], vote_pair["rejected"]) == ("answer B 3", "answer A 3")
        eta = (await trainer.annotator_quality())["annotators"][0]["eta"]
        assert edit["weight"] == vote_pair["weight"] == eta == pytest.approx(0.0, abs=1e-6)
        assert page["next_since_id"] == vote["id"]
    with svc.client(ADMIN) as admin:
        assert admin.put("/v1/annotators/1/trust", json={"trust": 0.9}).json() == {"trust": 0.9}
        assert admin.put("/v1/annotators/99/trust", json={"trust": 0.9}).status_code == 404
        assert admin.put("/v1/annotators/1/trust", json={"trust": 1.5}).status_code == 422
    async with OracleClient(svc.url, TRAINER) as trainer:
        pairs = (await trainer.feedback_pairs(0, 10))["pairs"]
        assert [(p["kind"], p["weight"]) for p in pairs] == [("edit", 0.9), ("vote", 0.9)]
        assert (await trainer.annotator_quality())["annotators"][0]["trust"] == 0.9


def test_annotator_token_is_revocable(feedback_service):
    svc, (tok_a, tok_b) = feedback_service
    with svc.client(tok_a) as a:
        assert a.get("/v1/comparisons/next").status_code == 200
    with svc.client(ADMIN) as admin:
        assert admin.delete("/v1/annotators/1").status_code == 204
        assert admin.delete("/v1/annotators/77").status_code == 404
    with svc.client(tok_a) as a, svc.client(tok_b) as b:
        deadline = time.monotonic() + 10  # other workers notice within their cache time
        while a.get("/v1/comparisons/next").status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert b.get("/v1/comparisons/next").status_code == 200


def test_poisoning_trigger_injects_no_pair(service_factory):
    """The attack of an annotator that declared the stronger and the better side itself: its votes are refused
    (422), and when it votes for side ``a`` on every comparison it is served instead, its η̂ falls to about 0 while
    an honest annotator (attentive 70% of the time) keeps its pairs."""
    svc = service_factory()  # μ estimated, pinned by controls
    rng = np.random.default_rng(11)
    with svc.client(ADMIN) as admin:
        made = {n: admin.post("/v1/annotators", json={"name": n}).json() for n in ("attacker", "honest")}
    truth, bodies = {}, []
    for i in range(400):
        stronger = "a" if rng.random() < 0.5 else "b"
        better = stronger if rng.random() < 0.8 else ("b" if stronger == "a" else "a")
        control = i % 5 == 0
        truth[f"c{i}"] = better
        bodies.append({**comparison_body(i, stronger=stronger, better=better if control else None),
                       "prompt_id": f"c{i}"})  # fmt: skip
    create_comparisons(svc, bodies)
    with svc.client(made["attacker"]["token"]) as attacker:
        trigger = [{"key": f"x{i}", "prompt_id": f"x{i}", "prompt": "Q", "task": "gsm8k", "response_a": f"bad {i}",
                    "response_b": f"good {i}", "stronger": "a", "picked": "a", **({"better": "a"} if i >= 300 else {})}
                   for i in range(350)]  # fmt: skip
        for start in range(0, 350, 50):
            assert attacker.post("/v1/votes/batch", json={"votes": trigger[start : start + 50]}).status_code == 422
        assert attacker.post("/v1/votes", json=trigger[0]).status_code == 422

    def honest(comparison: dict) -> str:
        if rng.random() < 0.7:
            return truth[comparison["prompt_id"]]
        return "a" if rng.random() < 0.5 else "b"

    assert vote_on_queue(svc, made["attacker"]["token"], lambda c: "a") == 400
    assert vote_on_queue(svc, made["honest"]["token"], honest) == 400
    with svc.client(TRAINER) as trainer:
        quality = {q["name"]: q for q in trainer.get("/v1/annotators/quality").json()["annotators"]}
        pairs = trainer.get("/v1/feedback/pairs", params={"limit": 1000}).json()["pairs"]
    print("eta:", {n: round(q["eta"], 3) for n, q in quality.items()})
    assert quality["attacker"]["eta"] < 0.2 and quality["honest"]["eta"] > 0.5
    assert quality["attacker"]["control_votes"] == quality["honest"]["control_votes"] == 80
    by = {n: [p for p in pairs if p["annotator"] == made[n]["id"]] for n in made}
    assert by["attacker"] == [] and len(by["honest"]) == 400
    assert all(p["weight"] == quality["honest"]["eta"] for p in by["honest"])


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
    with svc.client(ADMIN) as admin:  # three annotators, as an annotator holds at most 1,000 open leases
        made = [admin.post("/v1/annotators", json={"name": f"crash{n}"}).json() for n in range(3)]
    create_comparisons(svc, [comparison_body(i, annotator=made[i // 1000]["id"]) for i in range(3000)])
    tickets, clients = {}, []
    for annotator in made:
        with svc.client(annotator["token"], timeout_s=60) as http:
            tickets.update({c["prompt_id"]: (c["ticket"], len(clients)) for c in lease(http)})
        kwargs = {"request_timeout_s": 1.0, "max_wait_s": 1.5, "retries": 2, "backoff_s": 0.02}
        clients.append(OracleClient(svc.url, annotator["token"], **kwargs))
    assert len(tickets) == 3000
    queue: asyncio.Queue[tuple[int, list[dict]]] = asyncio.Queue()
    for start in range(0, 3000, 25):
        batch = [_vote(tickets[f"p{i}"][0], "ab"[i % 2], f"c{i}") for i in range(start, start + 25)]
        queue.put_nowait((tickets[f"p{start}"][1], batch))
    acked: set[str] = set()
    failures = 0

    async def submitter() -> None:
        nonlocal failures
        while not queue.empty():
            owner, batch = queue.get_nowait()
            out = await clients[owner].submit_votes(batch)
            if out is None:
                failures += 1
                queue.put_nowait((owner, batch))
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
    for client in clients:
        await client.aclose()
    assert failures > 0, "the outage was not noticed"
    with SyncOracleClient(svc.url, TRAINER, max_wait_s=30, request_timeout_s=10) as trainer:
        pairs, _ = all_pairs(trainer, 0.0)
        quality = trainer.annotator_quality()
    stored = [p["prompt_id"] for p in pairs]
    assert len(stored) == len(set(stored)) == 3000  # every key once: none lost, none doubled by a resend
    assert {f"p{k[1:]}" for k in acked_before_kill} <= set(stored)
    assert quality["votes"] == 3000


def test_controls_from_gold_look_like_any_comparison(service_factory):
    """Controls made from gold-labelled queries (a right and a wrong candidate) enter the annotators' queue
    mixed with ordinary comparisons; a vote on one counts as a control vote, right when it picks the gold side."""
    svc = service_factory("--vote-mu", "0.8")
    with svc.client() as trainer:
        for i in range(6):
            assert trainer.post("/v1/queries", json=query_body(i)).json()["label"]["correct"] == [True, False]
    create_comparisons(svc, [comparison_body(100 + i, stronger="ab"[i % 2]) for i in range(6)])
    with svc.client(ADMIN) as admin:
        made = admin.post("/v1/comparisons/controls", json={"limit": 4}).json()
        assert (made["total"], made["controls"]) == (10, 4)
        assert admin.post("/v1/comparisons/controls", json={"limit": 100}).json()["controls"] == 6  # each query once
        token = admin.post("/v1/annotators", json={"name": "a"}).json()["token"]
    with svc.client(token) as a:
        served = lease(a, 100)
    assert len(served) == 12 and {tuple(sorted(c)) for c in served} == {tuple(sorted(served[0]))}

    def right(comparison: dict) -> str:  # the gold side of a control (its response ends with the gold answer)
        gold = str(1000 + int(comparison["prompt_id"][1:]))
        return "a" if comparison["response_a"].endswith(gold) else "b"

    assert vote_on_queue(svc, token, lambda c: right(c) if c["prompt_id"] in {f"p{i}" for i in range(6)} else "a") == 12
    with svc.client() as trainer:
        (row,) = trainer.get("/v1/annotators/quality").json()["annotators"]
    assert (row["votes"], row["control_votes"]) == (12, 6)
