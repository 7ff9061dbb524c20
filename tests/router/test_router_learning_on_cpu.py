"""What the router learns from oracle labels: branch yields, τ_self calibration, the audit and its guard."""

import logging
import pickle

import numpy as np
import pytest

from coact_verl.config import RouterConfig
from coact_verl.router import GroupView, Reason, Router, wilson_interval
from coact_verl.router.learning import changed_target


def _groups(rng, n, levels=(0.25, 0.5, 0.75, 1.0), p_level=(0.2, 0.5, 0.8, 0.95)):
    """(views, majority correct) with P(majority correct | ρ) = p_level."""
    idx = rng.integers(len(levels), size=n)
    views = [GroupView(levels[i], task="gsm8k") for i in idx]
    correct = rng.random(n) < np.asarray(p_level)[idx]
    return views, correct


def test_changed_target_definition():
    assert changed_target(default_self=True, majority_correct=False, any_correct=True)  # wrong self-label fixed
    assert not changed_target(default_self=True, majority_correct=True, any_correct=True)
    assert changed_target(default_self=False, majority_correct=False, any_correct=True)  # dropped group rescued
    assert not changed_target(default_self=False, majority_correct=False, any_correct=False)


def test_observe_tracks_branch_yields_and_the_bandit_follows_them():
    """Low-agreement labels here rarely change anything while k-NN labels usually do: within a few steps the
    adaptive policy moves most of its budget to the k-NN branch (and back when the yields swap)."""
    rng = np.random.default_rng(0)
    router = Router(RouterConfig(policy="adaptive", oracle_share_per_step=0.25, seed=1))
    router.add_verified(rng.normal(size=(16, 4)))
    knn_share = []
    for step in range(30):
        good = "knn" if step < 15 else "low_agreement"
        views = [GroupView(float(a), embedding=rng.normal(size=4)) for a in rng.choice([0.25, 0.5, 0.75], size=80)]
        routes = router.route_step(views)
        for view, route in zip(views, routes, strict=True):
            if route.is_oracle:
                hit = route.reason.value == good
                # a changed target: a self-labelled majority wrong, or a dropped group with a right answer
                majority_ok = not hit if router.self_labels(view) else False
                assert router.observe(view, route, majority_correct=majority_ok, any_correct=hit) is hit
        used = [r.reason for r in routes if r.is_oracle]
        knn_share.append(sum(r is Reason.KNN for r in used) / len(used))
    assert np.mean(knn_share[8:15]) > 0.85
    assert np.mean(knn_share[23:]) < 0.15
    m = router.metrics()
    assert m["coact/router/branch/knn/labels"] > 0 and "coact/router/branch/low_agreement/yield" in m


def test_reference_set_takes_only_confirmed_majorities():
    emb = np.eye(3, dtype=np.float32)
    router = Router(RouterConfig())
    router.observe(GroupView(0.5, embedding=emb[0]), Reason.LOW_AGREEMENT, majority_correct=False, any_correct=True)
    assert router.reference_size == 0  # the oracle confirmed a minority answer: not a CoAct reference prompt
    router.observe(GroupView(0.75, embedding=emb[1]), Reason.KNN, majority_correct=True)
    assert router.reference_size == 1
    loose = Router(RouterConfig(reference_rule="any_correct"))
    loose.observe(GroupView(0.5, embedding=emb[0]), Reason.LOW_AGREEMENT, majority_correct=False, any_correct=True)
    assert loose.reference_size == 1


def test_calibration_self_labels_only_levels_that_meet_the_precision():
    rng = np.random.default_rng(1)
    cfg = RouterConfig(self_label_precision=0.9, calibration_min_labels=30, self_label_threshold=0.5)
    router = Router(cfg)
    fixed = Router(RouterConfig())
    probe = {a: GroupView(a, task="gsm8k") for a in (0.25, 0.5, 0.75, 1.0)}
    assert router.self_labels(probe[0.5]) and not router.self_labels(probe[0.25])  # no evidence yet: fixed τ_self
    views, correct = _groups(rng, 2000, p_level=(0.2, 0.5, 0.8, 0.97))
    for view, ok in zip(views, correct, strict=True):
        router.observe(view, Reason.LOW_AGREEMENT, majority_correct=bool(ok))
        fixed.observe(view, Reason.LOW_AGREEMENT, majority_correct=bool(ok))
    curve = router.calibration_curve()
    assert curve["gsm8k/0.5000"] == pytest.approx(0.5, abs=0.06) and curve["gsm8k/1.0000/n"] > 400
    assert [router.self_labels(probe[a]) for a in (0.25, 0.5, 0.75, 1.0)] == [False, False, False, True]
    assert [fixed.self_labels(probe[a]) for a in (0.25, 0.5, 0.75, 1.0)] == [False, True, True, True]  # default
    assert "coact/router/calibration/gsm8k/0.7500" in router.metrics()
    lenient = Router(RouterConfig(self_label_precision=0.15, calibration_min_labels=30))
    for view, ok in zip(views, correct, strict=True):
        lenient.observe(view, Reason.LOW_AGREEMENT, majority_correct=bool(ok))
    assert lenient.self_labels(probe[0.25])  # a level below τ_self whose precision meets the target
    other_task = GroupView(0.75, task="math")  # no math evidence: the pooled curve decides
    assert not router.self_labels(other_task)


def _audit_run(seed, precision_by_level, steps=6, audit_share=0.5):
    rng = np.random.default_rng(seed)
    cfg = RouterConfig(policy="lowest_agreement", audit_share=audit_share, audit_target=0.0, seed=seed)
    router = Router(cfg)
    levels = list(precision_by_level)
    for _ in range(steps):
        views = [GroupView(float(a), task="gsm8k") for a in rng.choice(levels, size=40)]
        correct = [rng.random() < precision_by_level[v.agreement] for v in views]
        routes = router.route_step(views, budget=8)
        for view, route, ok in zip(views, routes, correct, strict=True):
            if route.is_oracle:
                router.observe(view, route, majority_correct=bool(ok))
    return router


def test_audit_interval_covers_the_true_precision_at_its_nominal_rate():
    """1,000 seeded runs: the Wilson 95% interval of the audited self-label precision covers the truth 93-97%."""
    precision_by_level = {0.25: 0.1, 0.5: 0.6, 0.75: 0.85, 1.0: 0.95}
    self_levels = [0.5, 0.75, 1.0]  # τ_self = 0.5, unanimous self-labelled: uniform over these levels
    truth = float(np.mean([precision_by_level[a] for a in self_levels]))
    covered = n_total = 0
    for seed in range(1000):
        router = _audit_run(seed, precision_by_level)
        precision, low, high, n = router.audit_estimate()
        n_total += n
        covered += low <= truth <= high
    assert 0.93 <= covered / 1000 <= 0.97, covered
    assert n_total / 1000 == pytest.approx(6 * 4, abs=0.5)  # ⌊0.5 · 8⌋ audit labels per step
    m = router.metrics()
    assert {"coact/audit/precision", "coact/audit/ci_low", "coact/audit/ci_high"} <= set(m)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.69 < low < 0.73


def test_collapse_guard_raises_tau_self_then_stops_self_labelling(caplog):
    rng = np.random.default_rng(3)
    cfg = RouterConfig(policy="lowest_agreement", audit_share=0.5, audit_target=0.8, seed=2)
    router = Router(cfg)
    precision = {0.5: 0.2, 0.75: 0.3, 1.0: 0.97}
    with caplog.at_level(logging.WARNING, logger="coact_verl.router.router"):
        for _ in range(20):
            views = [GroupView(float(a)) for a in rng.choice(list(precision), size=60)]
            routes = router.route_step(views, budget=12)
            for view, route in zip(views, routes, strict=True):
                if route.is_oracle:
                    router.observe(view, route, majority_correct=bool(rng.random() < precision[view.agreement]))
    assert router.tau_self == pytest.approx(1.0)  # raised past 0.5 and 0.75: only unanimous groups remain
    assert router.default(GroupView(0.75)).is_drop and router.default(GroupView(1.0)).is_self
    assert "collapse guard" in caplog.text
    m = router.metrics()
    assert m["coact/audit/guard_events"] >= 2 and m["coact/audit/tau_self"] == pytest.approx(1.0)
    assert m["coact/audit/ci_high"] >= 0.8  # what is still self-labelled meets the target

    stopper = Router(cfg)
    for _ in range(20):
        views = [GroupView(float(a)) for a in rng.choice([0.5, 1.0], size=60)]
        routes = stopper.route_step(views, budget=12)
        for view, route in zip(views, routes, strict=True):
            if route.is_oracle:
                stopper.observe(view, route, majority_correct=bool(rng.random() < 0.3))
    assert stopper.tau_self > 1.0 and not stopper.default(GroupView(1.0)).is_self  # self-labelling stopped
    no_audit = Router(RouterConfig(policy="lowest_agreement"))
    assert no_audit.tau_self == 0.5 and "coact/audit/precision" not in no_audit.metrics()


def test_learning_state_round_trips_and_pickles():
    router = _audit_run(0, {0.5: 0.6, 0.75: 0.85, 1.0: 0.95})
    router.observe(GroupView(0.5, embedding=np.ones(3)), Reason.KNN, majority_correct=True)
    state = pickle.loads(pickle.dumps(router.state_dict()))
    restored = Router(router.cfg)
    restored.load_state_dict(state)
    assert restored.audit_estimate() == router.audit_estimate()
    assert restored.calibration_curve() == router.calibration_curve()
    assert restored.yields.counts == router.yields.counts and restored.reference_size == 1
    views = [GroupView(a) for a in (0.25, 0.5, 0.75, 1.0, 0.5, 0.75)]
    assert restored.route_step(views, 3) == router.route_step(views, 3)
