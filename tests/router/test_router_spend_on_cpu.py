"""The router spends its per-step budget (≥ 98%) whenever there are groups it may route, never more."""

import numpy as np
import pytest

from coact_verl.config import RouterConfig
from coact_verl.router import GroupView, HashingEmbedder, Router, budget_for_step
from coact_verl.router.cli import route_rollouts
from coact_verl.router.simulate import simulate_rows


def _views(rows, with_embedding=True):
    emb = HashingEmbedder().encode([r["prompt"] for r in rows]) if with_embedding else [None] * len(rows)
    return [
        GroupView(r["agreement"], unanimous=len(r["cluster_sizes"]) == 1, embedding=e, task=r["task"])
        for r, e in zip(rows, emb, strict=True)
    ]


def _routable(policy, views):
    if policy == "random":
        return len(views)
    return sum(not v.is_unanimous for v in views)


def _feed(router, view, route, row):
    if route.is_oracle:
        router.observe(view, route, row["majority_correct"], row["gold_cluster"] >= 0)


@pytest.mark.parametrize("policy", ["coact", "adaptive", "lowest_agreement", "random"])
@pytest.mark.parametrize("n_samples", [4, 8])
def test_online_spends_the_step_budget(policy, n_samples):
    """Announced step sizes: unanimous groups (~15-20% here) never count against the pacing."""
    rows = simulate_rows(64 * 40, n_samples, seed=n_samples)
    views = _views(rows)
    router = Router(RouterConfig(policy=policy, oracle_share_per_step=0.2, seed=3))
    spent = budget_sum = 0
    for start in range(0, len(views), 64):
        step_views, step_rows = views[start : start + 64], rows[start : start + 64]
        router.begin_step(len(step_views))
        budget = router._step_cap
        used = 0
        for view, row in zip(step_views, step_rows, strict=True):
            route = router.route_online(view)
            used += route.is_oracle
            _feed(router, view, route, row)
        assert used <= budget
        if _routable(policy, step_views) >= budget:
            spent += used
            budget_sum += budget
    assert budget_sum > 0
    assert spent >= 0.98 * budget_sum, (spent, budget_sum)


@pytest.mark.parametrize("policy", ["coact", "adaptive", "lowest_agreement"])
def test_online_with_unannounced_steps_learns_the_step_size(policy):
    """Rollout workers do not know how many groups a step brings: the router expects as many as the previous
    step had (the first step paces at the share's rate) and spends ≥ 98% of ⌊s·n + carry⌋ per step overall,
    never more than one label ahead of s · (groups seen) over the run, nor above a step's budget + 1."""
    rows = simulate_rows(64 * 30, 4, seed=11)
    views = _views(rows)
    router = Router(RouterConfig(policy=policy, oracle_share_per_step=0.2, seed=5))
    spent = budget_sum = 0
    carry = 0.0
    for start in range(0, len(views), 64):
        router.begin_step(None)
        budget, carry = budget_for_step(64, 0.2, carry)
        used = []
        for view, row in zip(views[start : start + 64], rows[start : start + 64], strict=True):
            route = router.route_online(view)
            used.append(route.is_oracle)
            _feed(router, view, route, row)
        cum = np.cumsum(used)
        seen_before = start
        assert np.all(spent + cum <= 0.2 * (seen_before + np.arange(1, len(used) + 1)) + 1 + 1e-9)
        assert cum[-1] <= budget + 1
        spent += int(cum[-1])
        budget_sum += budget
    assert spent >= 0.98 * budget_sum, (spent, budget_sum)


@pytest.mark.parametrize("policy", ["coact", "adaptive", "lowest_agreement", "random"])
def test_step_mode_spends_min_of_budget_and_routable(policy):
    rows = simulate_rows(64 * 20, 8, seed=2)
    views = _views(rows)
    router = Router(RouterConfig(policy=policy, oracle_share_per_step=0.2, spot_check_rate=0.1, audit_share=0.1))
    for start in range(0, len(views), 64):
        step_views, step_rows = views[start : start + 64], rows[start : start + 64]
        budget = router.step_budget(len(step_views))
        routes = router.route_step(step_views, budget)
        for view, route, row in zip(step_views, routes, step_rows, strict=True):
            _feed(router, view, route, row)
        used = sum(r.is_oracle for r in routes)
        assert used == min(budget, _routable(policy, step_views) if policy != "adaptive" else len(step_views))


@pytest.mark.parametrize("policy", ["lowest_agreement", "coact", "adaptive", "random"])
@pytest.mark.parametrize("skill", [(3.0, 1.0), (4.0, 1.5), (6.0, 1.5)])
def test_online_spends_every_step_of_small_runs(skill, policy):
    """Strong model, 8 samples, 200 prompts (steps of 64, 64, 64, 8): 20-50% of groups are unanimous and cannot
    be routed by most policies. Holding labels for better groups must not leave any unspent at a step's end,
    where a single label is 2.5% of the run's budget (before the shortfall bound, 14 of these 36 runs of the
    default policy ended a step short)."""
    for seed in range(12):
        rows = simulate_rows(200, 8, seed=seed, skill=skill)
        records, summary = route_rollouts(rows, RouterConfig(policy=policy, seed=seed), mode="online", step_size=64)
        carry = 0.0
        for step in range(summary["steps"]):
            in_step = [(row, rec) for row, rec in zip(rows, records, strict=True) if rec["step"] == step]
            budget, carry = budget_for_step(len(in_step), 0.2, carry)
            routable = (
                len(in_step)
                if policy in ("random", "adaptive")
                else sum(len(row["cluster_sizes"]) > 1 for row, _ in in_step)
            )
            used = sum(rec["action"] == "oracle" for _, rec in in_step)
            assert used <= budget
            if routable >= budget:
                assert used >= 0.98 * budget, (seed, step, used, budget)
