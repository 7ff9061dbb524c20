"""CoAct on verl's classic trainer (``trainer.use_v1=false``, ``RayPPOTrainer``) through ``main_ppo`` on CPU.

``configs/coact_grpo_classic_cpu.yaml``: the drop-in ``coact`` reward manager labels each group once in its gate,
with a local gold oracle service; the classic-trainer adapter checks the service before the first step, numbers
each prompt's responses and passes verl's validation flag on. The gate moves the service's run to each training
step, so the service's per-step label cap holds per step, not for the whole run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from coact_verl.launch import run_trainer
from tests.e2e.helpers import base_overrides, run_ok, validation_rows_without_split

pytestmark = pytest.mark.e2e


def _dumped_rows(dump_dir: Path) -> dict[int, list[dict]]:
    return {
        int(path.stem): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(dump_dir.glob("*.jsonl"))
    }


#: the local oracle service's label cap per training step
PER_STEP_CAP = 1


def _service_spend(db_path: Path) -> tuple[dict[int, int], int]:
    """The newest run's labels charged per step (from the service's database) and its step."""
    with sqlite3.connect(db_path) as db:
        run_id, step = db.execute("SELECT id, step FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        spent = db.execute("SELECT step, spent FROM run_step_spent WHERE run_id = ?", (run_id,)).fetchall()
    return {int(s): int(n) for s, n in spent if n}, int(step)


def test_coact_grpo_on_the_classic_trainer(tiny_assets, tmp_path):
    overrides = base_overrides(tiny_assets, 2) + [
        f"data.val_files={validation_rows_without_split(tiny_assets['test'], tmp_path / 'val.parquet')}",
        f"coact.oracle.gold_path={tiny_assets['train_gold']}",
        f"coact.oracle.db_path={tmp_path / 'oracle.sqlite'}",
        f'coact.oracle.serve_args=["--budget-per-step","{PER_STEP_CAP}"]',
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "coact.router.oracle_share_per_step=0.5",
        # a validation row that waited for siblings would time out after this long and carry no `acc`
        "coact.group.reward_timeout_s=60",
        f"trainer.rollout_data_dir={tmp_path / 'dump'}",
        "trainer.val_before_train=True",
    ]
    run = run_ok("coact_grpo_classic_cpu", overrides, tmp_path / "classic.log")
    log = run.log_path.read_text()
    assert "Legacy trainer `main_ppo_v0.py`" in log  # verl's classic trainer ran
    assert [s for s in sorted(run.steps) if s > 0] == [1, 2]

    # validation rows (no split) were scored alone against their ground truth: `acc` comes only from that path
    assert "val-core/coact/arithmetic/acc/mean@1" in log, log[-3000:]

    dumps = _dumped_rows(tmp_path / "dump")
    assert sorted(dumps) == [1, 2]
    routes = defaultdict(int)
    for step, rows in dumps.items():
        assert len(rows) == 8 * 4
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            groups[row["coact_prompt_id"]].append(row)
        assert len(groups) == 8 and all(len(g) == 4 for g in groups.values())
        labelled_by_oracle = sum(1 for g in groups.values() if g[0]["coact_oracle_status"] == "labeled")
        # the service's per-step cap: each step spends its own label, step 2 included
        assert labelled_by_oracle == PER_STEP_CAP, (step, [g[0]["coact_oracle_status"] for g in groups.values()])
        for group in groups.values():
            assert all(r["coact_group_complete"] == 1.0 for r in group)  # every sibling met in the gate
            assert len({r["coact_route"] for r in group}) == 1 and len({r["coact_label"] for r in group}) == 1
            route = group[0]["coact_route"]
            routes[route] += 1
            for r in group:  # the reward is the label's cluster, the same for the whole group
                labelled = r["coact_label_source"] in ("self", "oracle")
                expected = 1.0 if labelled and r["coact_cluster"] == r["coact_label_cluster"] >= 0 else 0.0
                assert r["score"] == r["coact_reward"] == expected, r
            if route == "oracle":
                assert all(r["coact_oracle_status"] == "labeled" and r["coact_label_source"] == "oracle" for r in group)
        oracle_groups = sum(1 for g in groups.values() if g[0]["coact_route"] == "oracle")
        assert oracle_groups <= 4, (step, oracle_groups)  # routing: at most half the step's groups
    assert routes["oracle"] >= 1 and routes["self"] >= 1, dict(routes)
    # the service charged each training step its own labels and ended on the last step
    assert _service_spend(tmp_path / "oracle.sqlite") == ({1: PER_STEP_CAP, 2: PER_STEP_CAP}, 2)
    assert any(g > 0 for g in run.metric("actor/grad_norm"))


def test_an_unreachable_oracle_stops_the_classic_trainer_at_start(tiny_assets, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    overrides = base_overrides(tiny_assets, 2) + [
        f"coact.oracle.url=http://127.0.0.1:{port}",
        "coact.oracle.token=some-token",
    ]
    start = time.monotonic()
    run = run_trainer("coact_grpo_classic_cpu", overrides, tmp_path / "unreachable.log")
    assert run.returncode != 0
    assert not [s for s in run.steps if s > 0], "training started against an unreachable oracle"
    log = run.log_path.read_text()
    assert "OracleSetupError" in log and f"cannot reach the oracle service at http://127.0.0.1:{port}" in log
    assert "set coact.oracle.url" in log  # the message names the fix
    assert time.monotonic() - start < 600


def test_the_drop_in_manager_without_coacts_agent_loop_manager_stops_the_classic_trainer_at_start(
    tiny_assets, tmp_path
):
    """A stock classic config with only ``reward.reward_manager.name=coact``: without CoAct's agent-loop manager the
    reward manager cannot tell a row's group, step or validation flag, so the run stops before any step and names
    the setting (instead of every group waiting out its timeout)."""
    overrides = base_overrides(tiny_assets, 1) + [
        f"coact.oracle.gold_path={tiny_assets['train_gold']}",
        f"coact.oracle.db_path={tmp_path / 'oracle.sqlite'}",
        "actor_rollout_ref.rollout.agent.agent_loop_manager_class=null",
        "trainer.val_before_train=True",
    ]
    start = time.monotonic()
    run = run_trainer("coact_grpo_classic_cpu", overrides, tmp_path / "stock_manager.log")
    assert run.returncode != 0
    assert not [s for s in run.steps if s > 0], "training started"
    log = run.log_path.read_text()
    assert (
        "set actor_rollout_ref.rollout.agent.agent_loop_manager_class="
        "coact_verl.adapters.classic.CoActClassicAgentLoopManager" in log
    ), log[-3000:]
    assert time.monotonic() - start < 300
