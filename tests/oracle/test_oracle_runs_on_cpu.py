"""Runs inside one service: each job its own budget, step, keys and labels; fresh runs start over, resumed runs
continue; the per-step cap counts what the service charged to the run's current step."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
from oracle_testlib import ADMIN, TRAINER, query_body

from coact_verl.oracle.client import OracleSetupError, SyncOracleClient, handshake
from coact_verl.oracle.service.db import Store


def _client(svc, info) -> SyncOracleClient:
    return SyncOracleClient(svc.url, TRAINER, run_id=info["run"]["id"], max_wait_s=10.0)


def test_two_jobs_against_one_service_are_isolated(service_factory):
    """Two trainers with their own run names share a service: the same keys, separate budgets and label logs."""
    svc = service_factory("--budget-total", "3")
    job_a = handshake(svc.url, TRAINER, run_name="proj/a", budget_total=3)
    job_b = handshake(svc.url, TRAINER, run_name="proj/b", budget_total=3)
    assert job_a["run"]["id"] != job_b["run"]["id"] and job_a["run"]["name"] == "proj/a"
    with _client(svc, job_a) as a, _client(svc, job_b) as b:
        assert [a.query(**query_body(i)).status for i in range(1, 5)] == ["labeled"] * 3 + ["over_budget"]
        # job b sends a key job a used: its own query, labelled and charged in its own run (no 409, no replay)
        first = b.query(**query_body(1, answers=("7", "1001")))
        assert first.status == "labeled" and first.label.correct == (False, True)
        assert b.budget()["spent"] == 1 and a.budget()["spent"] == 3
        assert [r["key"] for r in a.labels()["labels"]] == ["k1", "k2", "k3"]
        assert [r["key"] for r in b.labels()["labels"]] == ["k1"]
    with svc.client() as default:  # callers that name no run have the default run, untouched by both jobs
        assert default.get("/v1/budget").json()["spent"] == 0
        assert default.get("/v1/labels").json()["labels"] == []


def test_a_fresh_run_starts_over_and_a_resumed_run_continues(service_factory):
    svc = service_factory("--budget-total", "5")
    first = handshake(svc.url, TRAINER, run_name="proj/exp")
    with _client(svc, first) as client:
        assert client.query(**query_body(1)).status == "labeled"
    resumed = handshake(svc.url, TRAINER, run_name="proj/exp", resume=True)
    assert resumed["run"]["id"] == first["run"]["id"] and resumed["run"]["resumed"]
    assert resumed["budget"]["spent"] == 1
    fresh = handshake(svc.url, TRAINER, run_name="proj/exp")  # the same name, not resuming
    assert fresh["run"]["id"] != first["run"]["id"] and fresh["run"]["generation"] == 2
    assert not fresh["run"]["resumed"] and fresh["budget"] == {"total": 5, "spent": 0, "remaining": 5, "per_step": None}
    with _client(svc, fresh) as client:
        assert client.labels()["labels"] == []
        assert client.query(**query_body(1)).status == "labeled"  # the earlier run's key is not replayed
        assert client.budget()["spent"] == 1
    again = handshake(svc.url, TRAINER, run_name="proj/exp", resume=True)  # resumes the newest generation
    assert again["run"]["id"] == fresh["run"]["id"]
    # a worker that carries the run id shakes hands with that run, not a new one
    carried = handshake(svc.url, TRAINER, run_name="proj/exp", run_id=first["run"]["id"])
    assert carried["run"]["id"] == first["run"]["id"]


def test_an_unknown_run_is_refused_with_the_fix(service_factory):
    svc = service_factory()
    with svc.client() as trainer:
        trainer.headers["X-CoAct-Run"] = "999"
        reply = trainer.post("/v1/queries", json=query_body(1))
        assert reply.status_code == 404 and "POST /v1/runs" in reply.json()["detail"]
        assert trainer.get("/v1/budget").status_code == 404
        trainer.headers["X-CoAct-Run"] = "abc"
        assert trainer.post("/v1/queries", json=query_body(1)).status_code == 404
    with pytest.raises(OracleSetupError, match="coact.oracle.run_id=null"):
        handshake(svc.url, TRAINER, run_id=999)
    with svc.client(token="") as probe:  # refusals are counted
        assert "oracle_unknown_run_total 4\n" in probe.get("/metrics").text


def test_the_per_step_cap_counts_the_service_step_not_the_step_a_client_names(service_factory):
    """The driver moves the run to a step; two rollout workers name their own step numbers (one of them ahead):
    together they get the step's allowance once, and the next allowance only when the driver moves on."""
    svc = service_factory()
    info = handshake(svc.url, TRAINER, run_name="proj/steps")
    with svc.client(ADMIN) as admin:
        admin.headers["X-CoAct-Run"] = str(info["run"]["id"])
        assert admin.post("/v1/budget", json={"total": None, "per_step": 2}).json()["per_step"] == 2
    with _client(svc, info) as driver, _client(svc, info) as worker_a, _client(svc, info) as worker_b:
        assert driver.set_step(1)["step"] == 1
        statuses = [worker_a.query(**query_body(i, step=1)).status for i in (1, 2)]
        statuses += [worker_b.query(**query_body(i, step=2 + i)).status for i in (3, 4)]
        assert statuses == ["labeled", "labeled", "over_budget", "over_budget"]
        assert driver.set_step(2)["step"] == 2
        assert [worker_b.query(**query_body(i, step=0)).status for i in (5, 6, 7)] == [
            "labeled",
            "labeled",
            "over_budget",
        ]
        assert driver.budget()["spent"] == 4


def test_candidates_per_query_are_capped_by_the_run(service_factory):
    """A run opened with n samples per prompt takes queries of up to n candidates (one label each); more is a 422
    that charges nothing. A run asking for more than the service's cap stops at the handshake."""
    svc = service_factory("--max-candidates", "8")
    info = handshake(svc.url, TRAINER, run_name="proj/cap", samples_per_prompt=4)
    assert info["run"]["max_candidates"] == 4
    with svc.client() as trainer:
        trainer.headers["X-CoAct-Run"] = str(info["run"]["id"])
        four = query_body(1, answers=("1", "2", "3", "1001"))
        assert trainer.post("/v1/queries", json=four).json()["budget"]["spent"] == 1
        five = query_body(2, answers=("1", "2", "3", "4", "1002"))
        reply = trainer.post("/v1/queries", json=five)
        assert reply.status_code == 422 and "at most 4" in reply.json()["detail"]
        assert trainer.get("/v1/budget").json()["spent"] == 1
    with svc.client() as default:  # the default run has the service's cap
        assert default.post("/v1/queries", json=five).json()["status"] == "labeled"
        nine = {**query_body(3), "candidates": [{"answer": str(i), "response": "r", "votes": 1} for i in range(9)]}
        reply = default.post("/v1/queries", json=nine)
        assert reply.status_code == 422 and "at most 8" in reply.json()["detail"]
    with svc.client(token="") as probe:
        assert "oracle_over_candidate_cap_total 2\n" in probe.get("/metrics").text
    with pytest.raises(OracleSetupError, match="--max-candidates 32"):
        handshake(svc.url, TRAINER, run_name="proj/wide", samples_per_prompt=32)


def test_a_database_of_the_single_namespace_layout_is_migrated(tmp_path):
    """An older database (one budget, keys unique service-wide) becomes the default run, with nothing lost."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE budget (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER, per_step INTEGER,
            spent INTEGER NOT NULL DEFAULT 0);
        INSERT INTO budget VALUES (1, 10, NULL, 1);
        CREATE TABLE step_spent (step INTEGER PRIMARY KEY, spent INTEGER NOT NULL);
        CREATE TABLE gold (prompt_id TEXT PRIMARY KEY, answer TEXT NOT NULL);
        CREATE TABLE queries (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
            prompt_id TEXT NOT NULL, prompt TEXT NOT NULL, task TEXT NOT NULL, step INTEGER NOT NULL,
            candidates TEXT NOT NULL, status TEXT NOT NULL, charged INTEGER NOT NULL DEFAULT 0,
            assigned_to INTEGER, assigned_at REAL, created_at REAL NOT NULL);
        CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT,
            query_id INTEGER NOT NULL UNIQUE REFERENCES queries (id), answer TEXT, correct TEXT NOT NULL,
            source TEXT NOT NULL, annotator TEXT, created_at REAL NOT NULL);
        """
    )
    conn.execute(
        "INSERT INTO queries (key, prompt_id, prompt, task, step, candidates, status, charged, created_at)"
        " VALUES ('k1', 'p1', 'q', 'gsm8k', 3, '[]', 'labeled', 1, ?)",
        (time.time(),),
    )
    conn.execute("INSERT INTO labels (query_id, answer, correct, source, created_at) VALUES (1, '1', '[]', 'gold', 0)")
    conn.commit()
    conn.close()
    store = Store(str(path))
    assert store.budget() == store.budget(1) and (store.budget().total, store.budget().spent) == (10, 1)
    assert [r["key"] for r in store.labels_since(0, 10)] == ["k1"]
    run, resumed = store.open_run("proj/x", resume=False)
    assert not resumed and store.labels_since(0, 10, run_id=run.id) == []
    store.close()
    Store(str(path)).close()  # a second start finds the new layout and changes nothing


def test_the_handshake_route_reports_the_run(service_factory):
    svc = service_factory()
    info = handshake(svc.url, TRAINER, run_name="proj/report", samples_per_prompt=8)
    reply = httpx.get(
        f"{svc.url}/v1/handshake",
        headers={"Authorization": f"Bearer {TRAINER}", "X-CoAct-Run": str(info["run"]["id"])},
        timeout=10,
    ).json()
    assert reply["run"] == {**info["run"], "resumed": None} and reply["run"]["max_candidates"] == 8
    assert info["run"]["resumed"] is False


def test_a_fresh_generation_takes_the_older_ones_pending_human_queries_off_the_queue(service_factory):
    """Annotators are served the run that is training: a fresh run of the same name fails (and refunds) the
    pending queries of the generation it supersedes; other names' queries stay queued."""
    svc = service_factory("--budget-total", "5", backend="human")
    with svc.client(ADMIN) as admin:
        annotator = admin.post("/v1/annotators", json={"name": "a"}).json()["token"]
    old = handshake(svc.url, TRAINER, run_name="proj/exp")
    other = handshake(svc.url, TRAINER, run_name="proj/other")
    with _client(svc, old) as client:
        assert client.query(**query_body(1)).status == "pending"
        assert client.budget()["spent"] == 1
    with _client(svc, other) as client:
        assert client.query(**query_body(2)).status == "pending"
    fresh = handshake(svc.url, TRAINER, run_name="proj/exp")
    with _client(svc, fresh) as client:
        assert client.query(**query_body(3)).status == "pending"
    with svc.client(annotator) as person:
        served = []
        while (task := person.get("/v1/tasks/next").json()["task"]) is not None:
            served.append(task["prompt"])
            assert person.post(f"/v1/tasks/{task['query_id']}/answer", json={"correct": [0]}).status_code == 200
    assert served == [query_body(2)["prompt"], query_body(3)["prompt"]]
    with sqlite3.connect(svc.db) as conn:
        statuses = dict(conn.execute("SELECT key, status FROM queries WHERE run_id = ?", (old["run"]["id"],)))
        (spent,) = conn.execute("SELECT spent FROM runs WHERE id = ?", (old["run"]["id"],)).fetchone()
    assert statuses == {"k1": "failed"} and spent == 0
