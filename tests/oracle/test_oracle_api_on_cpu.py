"""The HTTP API against a real service: labels, idempotency, budget, gold, auth, annotator isolation."""

from __future__ import annotations

import httpx
import pytest
from oracle_testlib import ADMIN, GOLD, TRAINER, query_body


@pytest.fixture
def gold_service(service_factory):
    return service_factory("--budget-total", "5")


def test_health_and_openapi(gold_service):
    with gold_service.client(token="") as c:
        assert c.get("/healthz").json() == {"status": "ok", "backend": "gold"}
        spec = c.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/queries", "/v1/labels", "/v1/budget", "/v1/gold", "/v1/annotators"} <= paths
    assert {"/v1/tasks/next", "/v1/tasks/{query_id}/answer", "/healthz"} <= paths


def test_label_idempotency_budget_and_no_gold(gold_service):
    with gold_service.client() as c:
        first = c.post("/v1/queries", json=query_body(1)).json()
        assert first["status"] == "labeled"
        assert first["label"] == {"answer": "1001", "correct": [True, False], "source": "gold"}
        assert first["budget"] == {"total": 5, "spent": 1, "remaining": 4, "per_step": None}
        again = c.post("/v1/queries", json=query_body(1)).json()
        assert again == first  # same key: stored result, not charged twice
        missing = c.post("/v1/queries", json={**query_body(1, key="nog"), "prompt_id": "unknown"}).json()
        # no_gold tells the caller whether a prompt has gold: it costs a label, once per key
        assert missing["status"] == "no_gold" and missing["label"] is None and missing["budget"]["spent"] == 2
        again = c.post("/v1/queries", json={**query_body(1, key="nog"), "prompt_id": "unknown"}).json()
        assert again["status"] == "no_gold" and again["budget"]["spent"] == 2
        statuses = [c.post("/v1/queries", json=query_body(i)).json()["status"] for i in range(2, 8)]
        assert statuses == ["labeled"] * 3 + ["over_budget"] * 3
        assert c.get("/v1/budget").json()["remaining"] == 0
        assert c.post("/v1/budget", json={"total": 100}).status_code == 403
    with gold_service.client(ADMIN) as admin:
        assert admin.post("/v1/budget", json={"total": 6}).json()["remaining"] == 1
        assert admin.post("/v1/gold", json={"unknown": "1001"}).json() == {"written": 1, "total": len(GOLD) + 1}
    with gold_service.client() as c:
        nog = c.post("/v1/queries", json=query_body(1, key="nog") | {"prompt_id": "unknown"}).json()
        assert nog["status"] == "labeled" and nog["budget"]["spent"] == 5  # labelled under the no_gold charge
        assert c.post("/v1/queries", json=query_body(5)).json()["status"] == "labeled"
        assert c.post("/v1/queries", json=query_body(6)).json()["status"] == "over_budget"
        labels = c.get("/v1/labels", params={"since_id": 0}).json()
        assert [r["key"] for r in labels["labels"]] == ["k1", "k2", "k3", "k4", "nog", "k5"]
        page = c.get("/v1/labels", params={"since_id": labels["labels"][3]["id"], "limit": 1}).json()
        assert [r["key"] for r in page["labels"]] == ["nog"] and page["next_since_id"] == labels["labels"][4]["id"]
        assert all(str(1000 + i) not in str(c.get("/v1/budget").json()) for i in range(3))
    with gold_service.client(ADMIN) as admin:  # unbounded total, one label per training step
        assert admin.post("/v1/budget", json={"total": None, "per_step": 1}).json()["per_step"] == 1
        assert admin.post("/v1/budget", json={"total": None}).json()["per_step"] == 1  # omitted: kept
    with gold_service.client() as c:
        assert c.post("/v1/runs/step", json={"step": 9}).json()["step"] == 9
        statuses = [c.post("/v1/queries", json=query_body(i, step=9)).json()["status"] for i in (20, 21)]
        assert statuses == ["labeled", "over_budget"]
        # the step a query names does not open a new per-step allowance: the run's step (set by the driver) does
        assert c.post("/v1/queries", json=query_body(22, step=10)).json()["status"] == "over_budget"
        c.post("/v1/runs/step", json={"step": 10})
        assert c.post("/v1/queries", json=query_body(22, step=10)).json()["status"] == "labeled"


def test_invalid_requests_are_422(gold_service):
    with gold_service.client() as c:
        assert c.post("/v1/queries", json={**query_body(1), "candidates": []}).status_code == 422
        assert c.post("/v1/queries", json={**query_body(1), "task": "poetry"}).status_code == 422
        assert c.post("/v1/queries", json={**query_body(1), "step": 2**70}).status_code == 422
        assert c.get("/v1/labels", params={"since_id": -1}).status_code == 422


ROUTES = [
    ("POST", "/v1/queries", query_body(1)),
    ("GET", "/v1/labels", None),
    ("GET", "/v1/budget", None),
    ("POST", "/v1/budget", {"total": 3}),
    ("POST", "/v1/gold", {"p1": "1"}),
    ("POST", "/v1/annotators", {"name": "x"}),
    ("GET", "/v1/tasks/next", None),
    ("POST", "/v1/tasks/1/answer", {"correct": [0]}),
]
# Which roles each route admits (admin is also allowed on trainer routes).
ALLOWED = {
    "/v1/queries": {"trainer", "admin"},
    "/v1/labels": {"trainer", "admin"},
    ("GET", "/v1/budget"): {"trainer", "admin"},
    ("POST", "/v1/budget"): {"admin"},
    "/v1/gold": {"admin"},
    "/v1/annotators": {"admin"},
    "/v1/tasks/next": {"annotator"},
    "/v1/tasks/1/answer": {"annotator"},
}


def test_auth_matrix(gold_service):
    with gold_service.client(ADMIN) as admin:
        annotator = admin.post("/v1/annotators", json={"name": "ann"}).json()["token"]
    tokens = {"admin": ADMIN, "trainer": TRAINER, "annotator": annotator}
    for method, path, body in ROUTES:
        allowed = ALLOWED.get((method, path), ALLOWED.get(path))
        bad_auth = ("Bearer", "Basic abc", "Bearer no", f"Bearer {TRAINER}x")
        for headers in ({}, *({"Authorization": v} for v in bad_auth)):
            with gold_service.client(token="") as c:
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
        for role, token in tokens.items():
            with gold_service.client(token) as c:
                code = c.request(method, path, json=body).status_code
            if role in allowed:
                assert code not in (401, 403), (method, path, role, code)
            else:
                assert code == 403, (method, path, role, code)


def test_annotators_never_see_gold_or_other_labels(service_factory):
    svc = service_factory(backend="human")
    secret = {"p1": "98765", "p2": "87654"}
    with svc.client(ADMIN) as admin:
        admin.post("/v1/gold", json=secret)
        tok_a = admin.post("/v1/annotators", json={"name": "a"}).json()["token"]
        tok_b = admin.post("/v1/annotators", json={"name": "b"}).json()["token"]
    with svc.client() as trainer:
        for i in (1, 2):
            out = trainer.post("/v1/queries", json=query_body(i, answers=("11", "12"))).json()
            assert out["status"] == "pending" and out["label"] is None
    seen: list[str] = []
    with svc.client(tok_a) as a, svc.client(tok_b) as b:
        task_a = a.get("/v1/tasks/next").json()["task"]
        seen.append(str(task_a))
        task_b = b.get("/v1/tasks/next").json()["task"]
        seen.append(str(task_b))
        assert task_a["query_id"] != task_b["query_id"]  # leases are exclusive
        assert set(task_a) == {"query_id", "prompt", "task", "candidates"}
        answer = a.post(f"/v1/tasks/{task_a['query_id']}/answer", json={"correct": [1]})
        assert answer.status_code == 200 and answer.json()["label"]["correct"] == [False, True]
        seen.append(answer.text)
        # b cannot answer or read a's task, and gets no other task while its own is open
        stolen = b.post(f"/v1/tasks/{task_a['query_id']}/answer", json={"correct": [0]})
        assert stolen.status_code == 409
        seen.append(stolen.text)
        again = b.get("/v1/tasks/next").json()["task"]
        assert again["query_id"] == task_b["query_id"]
        seen.append(str(again))
        typed = b.post(f"/v1/tasks/{task_b['query_id']}/answer", json={"answer": "12.0"}).json()
        assert typed["label"] == {"answer": "12.0", "correct": [False, True], "source": "human"}
        seen.append(str(typed))
        assert b.get("/v1/tasks/next").json() == {"task": None}
        for forbidden in ("/v1/labels", "/v1/budget"):
            r = a.get(forbidden)
            assert r.status_code == 403
            seen.append(r.text)
    blob = " ".join(seen)
    assert "98765" not in blob and "87654" not in blob
    assert "human-" not in blob  # no annotator identities in annotator-facing payloads
    with svc.client() as trainer:
        labels = trainer.get("/v1/labels").json()["labels"]
        assert [(r["key"], r["annotator"]) for r in labels] == [("k1", "human-1"), ("k2", "human-2")]
        assert trainer.post("/v1/queries", json=query_body(1, answers=("11", "12"))).json()["status"] == "labeled"


def test_fast_path_answers_like_the_route(service_factory):
    """The lean path for trainer queries and the FastAPI route give the same answers, errors included."""
    fast = service_factory("--budget-total", "4", name="fast")
    route = service_factory("--budget-total", "4", "--no-fast-path", name="route")
    big = query_body(7, key="big")
    big["candidates"] += [{"answer": str(i), "response": "x" * 150_000, "votes": 1} for i in range(14)]
    # 2 MB: past the fast path's buffer, so it is replayed to the route
    over_cap = query_body(8, key="over-cap")  # 17 candidates: one more than the service's default cap
    over_cap["candidates"] += [{"answer": str(i), "response": "r", "votes": 1} for i in range(15)]
    requests = [
        (TRAINER, query_body(1)),
        (TRAINER, query_body(1)),
        (ADMIN, query_body(2)),
        (TRAINER, {**query_body(3, key="nog"), "prompt_id": "nope"}),
        (TRAINER, big),
        (TRAINER, over_cap),
        (TRAINER, query_body(4)),
        (TRAINER, query_body(5)),
        (TRAINER, {**query_body(6), "candidates": []}),
        (TRAINER, {**query_body(6), "extra": 1}),
        ("nope", query_body(6)),
        ("", query_body(6)),
    ]
    outcomes = []
    for svc in (fast, route):
        seen = []
        for token, body in requests:
            with svc.client(token) as c:
                r = c.post("/v1/queries", json=body)
                seen.append((r.status_code, r.headers["content-type"], r.json()))
        raw = httpx.post(f"{svc.url}/v1/queries", content=b"{not json", headers={"Authorization": f"Bearer {TRAINER}"})
        seen.append((raw.status_code, raw.json()))
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    codes = [o[0] for o in outcomes[0]]
    assert codes == [200] * 5 + [422] + [200] * 2 + [422, 422, 401, 401, 422]
    assert "at most 16" in outcomes[0][5][2]["detail"]
    served = outcomes[0][:5] + outcomes[0][6:8]
    assert [o[2]["status"] for o in served] == [
        "labeled", "labeled", "labeled", "no_gold", "labeled", "over_budget", "over_budget",
    ]  # fmt: skip
