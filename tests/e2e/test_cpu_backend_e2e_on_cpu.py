"""verl's own GRPO trainer (``python -m verl.trainer.main_ppo``) end to end on the CPU backend.

Stock verl GRPO (naive reward manager, a dense toy reward), so that only the backend is under test:
the FSDP2 actor must learn (``grad_norm > 0``) and the ``hf`` rollout must sample from the weights the
actor just trained. verl logs ``training/rollout_probs_diff_max``, the largest gap between the rollout's
and the actor's per-token probabilities; with the weight push it stays at fp32 rounding, and the
control run, whose rollout keeps its initial weights, must show it growing.
"""

from __future__ import annotations

import pytest

from coact_verl.cpu.hf_rollout import FREEZE_WEIGHTS_ENV
from tests.e2e.helpers import DENSE_REWARD, base_overrides, run_ok

pytestmark = pytest.mark.e2e

STOCK_GRPO = [
    "reward.reward_manager.name=naive",
    f"reward.custom_reward_function.path={DENSE_REWARD}",
    "~actor_rollout_ref.rollout.agent.agent_loop_manager_class",
    "trainer.v1.trainer_mode=sync",
    "coact.router.policy=self_only",
]


def test_grpo_steps_with_weight_sync(tiny_assets, tmp_path):
    run = run_ok("coact_grpo_cpu", base_overrides(tiny_assets, 3) + STOCK_GRPO, tmp_path / "sync.log")
    assert run.metric("training/global_step") == [1.0, 2.0, 3.0]
    # The actor learns from every step with a learning signal. The toy reward is coarse (a tiny model's responses
    # often have the same share of digits), so a step may have no group with two different rewards: GRPO's
    # advantages are then all zero and so is the gradient.
    highs, lows = run.metric("critic/advantages/max"), run.metric("critic/advantages/min")
    spread = [hi - lo for hi, lo in zip(highs, lows, strict=True)]
    grads = run.metric("actor/grad_norm")
    assert len(grads) == 3 and any(s > 0 for s in spread), (spread, grads)
    assert all(g > 0 for g, s in zip(grads, spread, strict=True) if s > 0), (spread, grads)
    gaps = run.metric("training/rollout_probs_diff_max")
    assert len(gaps) == 3 and max(gaps) < 1e-3, gaps


def test_rollout_without_weight_sync_drifts(tiny_assets, tmp_path):
    run = run_ok(
        "coact_grpo_cpu",
        base_overrides(tiny_assets, 3) + STOCK_GRPO,
        tmp_path / "frozen.log",
        extra_env={FREEZE_WEIGHTS_ENV: "1"},
    )
    gaps = run.metric("training/rollout_probs_diff_max")
    assert gaps[0] < 1e-3, gaps  # same initial weights
    assert gaps[-1] > 100 * max(gaps[0], 1e-6) and gaps[-1] > 1e-2, gaps
