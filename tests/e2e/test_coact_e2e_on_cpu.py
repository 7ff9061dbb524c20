"""CoAct through verl's entrypoint on CPU: the rollout-worker group step with the gold oracle service,
and the drop-in reward manager in a stock verl GRPO config, both checked against the shared core.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest

from coact_verl.config import CoActConfig, RouterConfig
from coact_verl.demo import run_demo
from coact_verl.group.labeler import GroupLabeler, GroupRequest
from tests.e2e.helpers import base_overrides, run_ok

pytestmark = pytest.mark.e2e
CONFIGS = Path(__file__).with_name("configs")


def test_coact_grpo_with_gold_oracle_logs_coact_metrics(tiny_assets, tmp_path):
    run = run_demo(tmp_path / "demo", steps=3)
    assert run.returncode == 0, run.tail(80)
    # step 0 is the demo's validation before training (accuracy before); steps 1-3 train
    assert sorted(run.steps) == [0, 1, 2, 3]
    assert not any(k.startswith("coact/route/") for k in run.steps[0])
    train_steps = [run.steps[s] for s in (1, 2, 3)]
    for key in ("coact/agreement/mean", "coact/route/self_frac", "coact/route/oracle_frac", "coact/route/drop_frac"):
        assert all(key in step for step in train_steps), key
    for step in train_steps:
        fractions = step["coact/route/self_frac"] + step["coact/route/oracle_frac"] + step["coact/route/drop_frac"]
        assert fractions == pytest.approx(1.0)
        assert sum(v for k, v in step.items() if k.startswith("coact/agreement/hist_")) == pytest.approx(1.0)
    spent = run.metric("coact/oracle/budget_spent")
    assert spent == sorted(spent) and spent[-1] > 0  # the service was asked and charged
    oracle_acc = run.metric("coact/oracle/label_accuracy")
    assert oracle_acc and all(a == 1.0 for a in oracle_acc)  # the gold backend labels correctly
    logged = {k for step in run.steps.values() for k in step}
    assert {"coact/reward/accuracy", "coact/self_label/precision", "coact/oracle/label_accuracy"} <= logged
    # a step whose groups all have uniform rewards has zero advantage (grad_norm 0); some step must train
    assert any(g > 0 for g in run.metric("actor/grad_norm"))


def _dumped_groups(dump_dir: Path) -> list[tuple[list[str], list[float]]]:
    """(responses, scores) per prompt from verl's rollout dump, in session order."""
    groups: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for path in sorted(dump_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            uid, session, _ = row["uid"].rsplit("_", 2)
            groups[f"{path.stem}/{uid}"].append((int(session), row["output"], float(row["score"])))
    result = []
    for items in groups.values():
        items.sort()
        result.append(([text for _, text, _ in items], [score for _, _, score in items]))
    return result


def _core_rewards(groups: list[tuple[list[str], list[float]]]) -> list[list[float]]:
    labeler = GroupLabeler(CoActConfig(router=RouterConfig(policy="self_only")))

    async def label_all():
        outcomes = []
        for i, (responses, _) in enumerate(groups):
            request = GroupRequest(f"p{i}", "q", "gsm8k", 1, tuple(responses))
            outcomes.append(list((await labeler.label(request)).rewards))
        return outcomes

    try:
        return asyncio.run(label_all())
    finally:
        labeler.clusterer.close()


def _assert_rewards_match_core(dump_dir: Path) -> None:
    groups = _dumped_groups(dump_dir)
    assert len(groups) >= 16, f"expected 2 steps x 8 prompts, got {len(groups)}"
    assert all(len(responses) == 4 for responses, _ in groups)
    expected = _core_rewards(groups)
    assert [scores for _, scores in groups] == expected
    assert any(sum(scores) > 0 for _, scores in groups)  # not a degenerate all-zero comparison


def test_rollout_group_step_rewards_equal_the_core(tiny_assets, tmp_path):
    import pandas as pd

    val = tmp_path / "val8.parquet"
    pd.read_parquet(tiny_assets["test"]).head(8).to_parquet(val)
    overrides = base_overrides(tiny_assets, 2) + [
        f"data.val_files={val}",
        "coact.router.policy=self_only",
        f"trainer.rollout_data_dir={tmp_path / 'dump'}",
        # validation goes through the coact reward manager per sample: score/acc/pred give maj@N
        "trainer.val_before_train=True",
        "actor_rollout_ref.rollout.val_kwargs.n=4",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
    ]
    run = run_ok("coact_grpo_cpu", overrides, tmp_path / "rollout.log")
    _assert_rewards_match_core(tmp_path / "dump")
    log = run.log_path.read_text()
    assert "val-core/coact/arithmetic/acc/maj@4/mean" in log and "val-core/coact/arithmetic/acc/mean@4" in log


def test_drop_in_reward_manager_in_stock_config_gives_the_same_rewards(tiny_assets, tmp_path):
    overrides = base_overrides(tiny_assets, 2) + [
        "reward.reward_manager.name=coact",
        "+coact.router.policy=self_only",  # no oracle: the default router needs one (and its gold answers)
        f"trainer.rollout_data_dir={tmp_path / 'dump'}",
    ]
    run = run_ok("stock_grpo_cpu", overrides, tmp_path / "dropin.log", config_path=CONFIGS)
    _assert_rewards_match_core(tmp_path / "dump")
    # the gate's group rewards reach the actor: some step has a non-uniform group, so a non-zero gradient
    assert any(g > 0 for g in run.metric("actor/grad_norm"))


def test_coact_grpo_with_lora(tiny_assets, tmp_path):
    overrides = base_overrides(tiny_assets, 2) + [
        "actor_rollout_ref.model.lora_rank=8",
        "actor_rollout_ref.model.lora_alpha=16",
        "coact.router.policy=self_only",
    ]
    run = run_ok("coact_grpo_cpu", overrides, tmp_path / "lora.log")
    assert "PeftModelForCausalLM" in run.log_path.read_text()  # the actor trains LoRA adapters
    assert sorted(run.steps) == [1, 2]
    assert any(g > 0 for g in run.metric("actor/grad_norm"))
    # the rollout samples from the merged adapter weights: the gap does not grow with training
    gaps = run.metric("training/rollout_probs_diff_max")
    assert max(gaps) < 0.05, gaps


def test_training_continues_when_the_oracle_is_down(tiny_assets, tmp_path):
    """An outage after a successful start-up handshake degrades training (self-label or drop, counted); an
    unreachable service at start-up stops the run instead (tests/oracle/test_oracle_client_on_cpu.py)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    budget = {"total": None, "spent": 0, "remaining": None, "per_step": None}
    run = {"id": 2, "name": "run", "generation": 1, "resumed": False, "step": 0, "max_candidates": 16, "budget": budget}
    handshake = {"role": "trainer", "backend": "gold", "needs_gold": True, "gold": 1, "api_version": "1.0.0",
                 "budget": budget, "run": run}  # fmt: skip
    answers = {"/v1/handshake": handshake, "/v1/runs": run}

    class DownAfterHandshake(BaseHTTPRequestHandler):  # answers the handshake, then 503 for everything
        def _reply(self) -> None:
            body = json.dumps(answers[self.path]).encode() if self.path in answers else b""
            self.send_response(200 if body else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DownAfterHandshake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    overrides = base_overrides(tiny_assets, 2) + [
        f"coact.oracle.url=http://127.0.0.1:{server.server_address[1]}",
        "coact.oracle.token=any",
        "coact.router.policy=gold_all",
        "coact.oracle.max_wait_s=1.0",
        "coact.oracle.request_timeout_s=0.3",
    ]
    try:
        run = run_ok("coact_grpo_cpu", overrides, tmp_path / "down.log")
    finally:
        server.shutdown()
    assert sorted(run.steps) == [1, 2]
    for step in run.steps.values():  # every group was routed to the oracle, none got an answer
        assert step["coact/oracle/status_unavailable"] == step["coact/groups"]
        assert step["coact/route/oracle_frac"] == 0.0
        assert step["coact/route/self_frac"] + step["coact/route/drop_frac"] == pytest.approx(1.0)
    assert "coact/oracle/unreachable" in run.steps[2]


def test_generated_questions_are_admitted_and_trained_on(tiny_assets, tmp_path):
    from coact_verl.pool import PromptPool

    overrides = base_overrides(tiny_assets, 5) + [
        f"coact.oracle.gold_path={tiny_assets['train_gold']}",
        f"coact.oracle.db_path={tmp_path / 'oracle.sqlite'}",
        "coact.router.policy=gold_all",  # many oracle-verified seeds early in a short run
        "coact.router.oracle_share_per_step=1.0",
        "coact.generation.every_k_steps=2",
        "coact.generation.num_questions=32",
        # the tiny model answers its own questions with agreement ~0.4 on average: at CoAct's 5/8 only 0-10%
        # of a round is admitted (a round admitting nothing happens); from 2 of 4 on, a large share is
        "coact.generation.admit_threshold=0.5",
        # a tiny model rarely gets the majority right; seeds from any oracle-confirmed answer keep the test stable
        "coact.generation.seed_rule=any_correct",
        "actor_rollout_ref.rollout.max_model_len=1024",  # 3-shot prompts are longer than training prompts
        # the tiny model's questions take 92-164 prompt tokens; longer than this they are rejected (prompt_too_long)
        "data.max_prompt_length=192",
        "trainer.save_freq=2",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    run = run_ok("coact_grpo_cpu", overrides, tmp_path / "gen.log")
    generated = run.metric("coact/gen/generated")
    admitted = run.metric("coact/gen/admitted")
    assert generated and sum(generated) > 0, "no generation round ran"
    assert sum(admitted) > 0, f"nothing admitted: {run.steps}"
    trained = run.metric("coact/batch/provenance_generated")
    first_admission = min(s for s in sorted(run.steps) if run.steps[s].get("coact/gen/admitted", 0) > 0)
    assert any(run.steps[s]["coact/batch/provenance_generated"] > 0 for s in run.steps if s > first_admission), trained
    rejected = {k: v for s in run.steps.values() for k, v in s.items() if k.startswith("coact/gen/rejected_") and v}
    assert sum(generated) == sum(admitted) + sum(
        v for s in run.steps.values() for k, v in s.items() if k.startswith("coact/gen/rejected_")
    ), rejected
    # each checkpoint holds the pool as of the end of its step (the resume point)
    for step in (2, 4, 5):
        saved = PromptPool.load(tmp_path / "ckpt" / f"global_step_{step}" / "coact_pool.json")
        admitted_so_far = sum(run.steps[s].get("coact/gen/admitted", 0) for s in run.steps if s <= step)
        assert saved.counts()["generated"] == admitted_so_far, (step, saved.counts())

    # resume: a second run continues from global_step_5 with the pool exactly as saved there
    before = PromptPool.load(tmp_path / "ckpt" / "global_step_5" / "coact_pool.json")
    resumed = run_ok(
        "coact_grpo_cpu",
        [
            o if not o.startswith("trainer.total_training_steps") else "trainer.total_training_steps=6"
            for o in overrides
        ],
        tmp_path / "resumed.log",
    )
    assert sorted(resumed.steps) == [6]
    # without the restore the new trainer would start from an empty pool (step 6 runs a round of its own)
    assert before.counts()["generated"] >= 1
    step6 = resumed.steps[6]
    assert step6["coact/pool/size_generated"] == before.counts()["generated"] + step6.get("coact/gen/admitted", 0)
    after = PromptPool.load(tmp_path / "ckpt" / "global_step_6" / "coact_pool.json")
    assert [e.prompt_id for e in after][: len(before)] == [e.prompt_id for e in before]


def test_one_router_serves_two_rollout_workers_and_resumes_with_the_checkpoint(tiny_assets, tmp_path):
    """Two agent-loop workers route through the job's one router: it sees every group of a step, its k-NN
    reference set holds every majority the oracle confirmed in the job, and a resumed run continues from the router
    saved in the checkpoint (its spent-label count and reference set go on from the saved ones)."""
    import re

    overrides = base_overrides(tiny_assets, 2) + [
        f"coact.oracle.gold_path={tiny_assets['train_gold']}",
        f"coact.oracle.db_path={tmp_path / 'oracle.sqlite'}",
        "coact.router.policy=gold_all",  # every group is labelled: its confirmed majority joins the reference set
        "actor_rollout_ref.rollout.agent.num_workers=2",
        "trainer.save_freq=1",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    run = run_ok("coact_grpo_cpu", overrides, tmp_path / "router.log")
    workers = set(re.findall(r"pid=(\d+)[^\n]*?CoAct rollout worker on node", run.log_path.read_text()))
    assert len(workers) == 2, workers
    resumed = run_ok(
        "coact_grpo_cpu",
        [o.replace("total_training_steps=2", "total_training_steps=3") for o in overrides],
        tmp_path / "resumed.log",
    )
    assert sorted(run.steps) == [1, 2] and sorted(resumed.steps) == [3]
    assert (tmp_path / "ckpt" / "global_step_2" / "coact_router.json").is_file()
    steps = {**run.steps, **resumed.steps}
    confirmed = 0
    for step in (1, 2, 3):
        metrics = steps[step]
        assert metrics["coact/router/groups"] == metrics["coact/groups"] == 8  # both workers' groups, one router
        confirmed += metrics["coact/oracle/majority_confirmed"]
        assert metrics["coact/router/reference_size"] == confirmed, (step, metrics)  # step 3: restored + new
        # labels the router spent in the job: 8 a step, counted on from the checkpoint after the resume (not 8)
        assert metrics["coact/router/oracle_used_total"] == 8 * step, (step, metrics)
