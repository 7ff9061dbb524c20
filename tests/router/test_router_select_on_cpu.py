"""Step-mode policies: who goes to the oracle for a whole step's groups."""

import numpy as np
import pytest

from coact_verl.config import ROUTER_POLICIES, RouterConfig
from coact_verl.router import POLICIES, GroupView, Reason, Router, get_policy, register_policy


def _unit(*values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _summary(routes):
    return [(r.action.value, r.reason.value) for r in routes]


AGREEMENTS = [0.125, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0, 1.0, 0.375, 0.5]


def test_registry_matches_config_policies():
    assert set(POLICIES) == set(ROUTER_POLICIES)
    with pytest.raises(KeyError, match="unknown routing policy"):
        get_policy("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_policy("coact")(type("Dup", (), {}))


def test_coact_iteration_zero_falls_back_to_lowest_agreement_in_self_band():
    routes = Router(RouterConfig(policy="coact")).route_step([GroupView(a) for a in AGREEMENTS], budget=4)
    # B = 4 -> 2 lowest-agreement (0.125, 0.25), 2 k-NN; nothing verified yet -> the two 0.5 groups of the
    # self band (indices 2 and 9). 0.375 stays below τ_self and is dropped; the rest are self-labelled.
    assert _summary(routes) == [
        ("oracle", "low_agreement"),
        ("oracle", "low_agreement"),
        ("oracle", "knn"),
        ("self", "majority"),
        ("self", "majority"),
        ("self", "majority"),
        ("self", "majority"),
        ("self", "majority"),
        ("drop", "below_threshold"),
        ("oracle", "knn"),
    ]


def test_coact_knn_prefers_prompts_far_from_verified_ones():
    router = Router(RouterConfig(policy="coact", knn_k=2, knn_share=2 / 3))  # budget 3 -> 1 low-agreement + 2 k-NN
    router.add_verified(np.stack([_unit(1, 0, 0), _unit(1, 0.1, 0), _unit(1, 0, 0.1)]))
    near, far, mid = _unit(1, 0.05, 0.05), _unit(0, 1, 0), _unit(1, 1, 0)
    groups = [
        GroupView(0.25),  # low band: the low-agreement pick
        GroupView(0.5, embedding=near),  # lowest ρ of the self band, but close to verified prompts
        GroupView(0.875, embedding=far),
        GroupView(0.75, embedding=mid),
        GroupView(0.625),  # no embedding: ranks after every embedded group
    ]
    routes = router.route_step(groups, budget=3)
    assert _summary(routes) == [
        ("oracle", "low_agreement"),
        ("self", "majority"),
        ("oracle", "knn"),
        ("oracle", "knn"),
        ("self", "majority"),
    ]


def test_unfilled_knn_share_flows_back_to_low_agreement():
    groups = [GroupView(a) for a in (0.125, 0.25, 0.375, 0.25, 1.0)]  # no self-band group at all
    routes = Router(RouterConfig(policy="coact")).route_step(groups, budget=4)
    assert [r.reason.value for r in routes] == ["low_agreement"] * 4 + ["majority"]


def test_low_agreement_can_reach_into_self_band_and_ties_break_by_index():
    groups = [GroupView(a) for a in (0.75, 0.5, 0.5, 1.0, 0.5)]
    routes = Router(RouterConfig(policy="coact", knn_share=0.0)).route_step(groups, budget=2)
    assert [r.is_oracle for r in routes] == [False, True, True, False, False]


def test_lowest_agreement_policy_spends_everything_on_lowest_rho():
    routes = Router(RouterConfig(policy="lowest_agreement")).route_step([GroupView(a) for a in AGREEMENTS], 4)
    picked = [i for i, r in enumerate(routes) if r.is_oracle]
    assert picked == [0, 1, 2, 8]  # 0.125, 0.25, 0.375, then the first of the two 0.5 groups
    assert all(r.reason is Reason.LOW_AGREEMENT for r in routes if r.is_oracle)


def test_random_policy_is_seeded_and_spends_the_budget_on_any_band():
    groups = [GroupView(a) for a in AGREEMENTS]
    first = Router(RouterConfig(policy="random", seed=3)).route_step(groups, 3)
    again = Router(RouterConfig(policy="random", seed=3)).route_step(groups, 3)
    assert _summary(first) == _summary(again)
    assert sum(r.is_oracle for r in first) == 3
    assert all(r.reason is Reason.RANDOM for r in first if r.is_oracle)
    router, hits = Router(RouterConfig(policy="random", seed=0)), np.zeros(len(groups))
    for _ in range(400):
        hits += [r.is_oracle for r in router.route_step(groups, 3)]
    assert np.all(np.abs(hits / 400 - 0.3) < 0.08)  # each group chosen with probability 3/10
    non_oracle = [r for r in first if not r.is_oracle]
    assert {r.reason for r in non_oracle} <= {Reason.MAJORITY, Reason.BELOW_THRESHOLD}


def test_self_only_and_gold_all():
    groups = [GroupView(a) for a in AGREEMENTS]
    assert not any(r.is_oracle for r in Router(RouterConfig(policy="self_only")).route_step(groups, 10))
    gold = Router(RouterConfig(policy="gold_all")).route_step(groups, 0)
    assert all(r.is_oracle and r.reason is Reason.ALL for r in gold)


def test_spot_checks_audit_unanimous_groups_within_budget():
    groups = [GroupView(1.0)] * 3 + [GroupView(0.25)]
    routes = Router(RouterConfig(spot_check_rate=1.0)).route_step(groups, budget=2)
    assert _summary(routes)[:3] == [("oracle", "spot_check"), ("oracle", "spot_check"), ("self", "majority")]
    assert routes[3].is_drop  # the budget went to the audits first
    none = Router(RouterConfig(spot_check_rate=0.0, self_label_unanimous=False)).route_step(groups, 1)
    assert [r.reason for r in none] == [Reason.UNANIMOUS] * 3 + [Reason.LOW_AGREEMENT]


@pytest.mark.parametrize("policy", ["coact", "lowest_agreement", "random"])
def test_budget_is_respected(policy):
    rng = np.random.default_rng(0)
    router = Router(RouterConfig(policy=policy, spot_check_rate=0.3))
    router.add_verified(rng.normal(size=(20, 4)))
    for _ in range(50):
        n = int(rng.integers(1, 30))
        groups = [GroupView(float(rng.integers(1, 9)) / 8, embedding=rng.normal(size=4)) for _ in range(n)]
        budget = int(rng.integers(0, n + 1))
        used = sum(r.is_oracle for r in router.route_step(groups, budget))
        eligible = n if policy == "random" else sum(not g.is_unanimous for g in groups)
        assert min(budget, eligible) <= used <= budget
