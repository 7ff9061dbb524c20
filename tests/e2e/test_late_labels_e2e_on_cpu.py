"""Human labels that arrive after their step: the trainer does not wait for them (the oracle answers
``pending`` within its bound), and once an annotator answers, the prompt returns to training with that label.

A real oracle service runs the ``human`` backend; an annotator thread answers the queue through the task API
a moment later, typing the hidden gold answer as a careful human would.
"""

from __future__ import annotations

import threading
import time

import httpx
import pandas as pd
import pytest

from coact_verl.oracle.local import start_local_service, stop_local_service
from tests.e2e.helpers import base_overrides, run_ok

pytestmark = pytest.mark.e2e
ADMIN = "admin-e2e"


def _annotate(url: str, token: str, gold_by_question: dict[str, str], stop: threading.Event, answered: list) -> None:
    """Answer every waiting task, each at least one second after it is first seen (a human's pace)."""
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        while not stop.is_set():
            try:
                task = client.get("/v1/tasks/next").json()["task"]
            except httpx.HTTPError:  # a busy service: try again, as a person would reload the page
                stop.wait(0.5)
                continue
            if task is None:
                stop.wait(0.5)
                continue
            time.sleep(1.0)
            answer = gold_by_question[task["prompt"]]
            try:
                response = client.post(f"/v1/tasks/{task['query_id']}/answer", json={"answer": answer})
            except httpx.HTTPError:
                continue  # the lease expires and the task comes back
            if response.status_code == 200:
                answered.append(task["query_id"])


def test_late_human_labels_return_to_training(tiny_assets, tmp_path):
    train = pd.read_parquet(tiny_assets["train"])
    gold = dict(pd.read_parquet(tiny_assets["train_gold"])[["prompt_id", "answer"]].itertuples(index=False))
    gold_by_question = {e["question"]: gold[e["prompt_id"]] for e in train["extra_info"]}
    url, proc = start_local_service(
        str(tmp_path / "oracle.sqlite"),
        backend="human",
        admin_token=ADMIN,
        trainer_token="coact-trainer",
        log_path=str(tmp_path / "oracle.log"),
    )
    stop, answered, annotator = threading.Event(), [], None
    try:
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            token = admin.post("/v1/annotators", json={"name": "ann"}).json()["token"]
        annotator = threading.Thread(target=_annotate, args=(url, token, gold_by_question, stop, answered))
        annotator.start()
        overrides = base_overrides(tiny_assets, 4) + [
            f"coact.oracle.url={url}",
            "coact.oracle.token=coact-trainer",
            "coact.router.policy=gold_all",  # every group asks the humans
            "coact.oracle.max_wait_s=0.3",  # and training does not wait for them
        ]
        run = run_ok("coact_grpo_cpu", overrides, tmp_path / "late.log")
    finally:
        stop.set()
        if annotator is not None:
            annotator.join(30)
        stop_local_service(proc)
    assert sorted(run.steps) == [1, 2, 3, 4]
    assert answered, "the annotator answered nothing"
    # no human answers within its step: every new group goes unanswered (pending, or unavailable when the
    # 0.3 s bound passes first) and is self-labelled or dropped; the only oracle-labelled groups are the
    # prompts that came back with a late label (4 rows each), and they are not asked again
    for s in run.steps.values():
        returned = s["coact/batch/provenance_oracle"] / 4
        unanswered = sum(v for k, v in s.items() if k.startswith("coact/oracle/status_"))
        assert "coact/oracle/status_labeled" not in s
        assert unanswered + returned == s["coact/groups"]
        assert s["coact/route/oracle_frac"] * s["coact/groups"] == pytest.approx(returned)
    assert any(s.get("coact/oracle/status_pending", 0) > 0 for s in run.steps.values())
    late = {step: s.get("coact/late_labels/late", 0) for step, s in run.steps.items()}
    assert sum(late.values()) > 0, late
    first = min(step for step, count in late.items() if count > 0)
    assert first < 4, late
    # the labelled prompts are trained on in the next step, scored against the human label
    trained = {step: s["coact/batch/provenance_oracle"] for step, s in run.steps.items()}
    assert trained[first + 1] > 0, trained
    assert all(trained[step] == 0 for step in range(1, first + 1)), trained
    assert run.steps[4]["coact/pool/late_labels"] == sum(late.values())
