"""Attentiveness EM: exactness, recovery at statistically sound sizes, monotone likelihood, filtering.

Recovery sizes come from the Cramér–Rao bound (``votes_needed``): an estimate within ±0.05 at 3.5 standard
errors needs 9,805 ordinary votes from a user with η = 0.2 when μ = 0.85 is known, and still 4,704 when every
vote is a control. 2,000 votes in total therefore cannot pin η to ±0.05 for users spread over 0.2 … 0.95;
with 2,000 votes the test below checks the estimator against its own standard error instead, and the ±0.05
tests use 6 users × 5,578 … 9,805 votes (48,353 in total, μ known) and 6 users × 1,521 … 7,714 votes
(32,452, a quarter of them controls, μ estimated). EM on per-user counts takes milliseconds either way.
"""

import numpy as np
import pytest

from coact_verl.feedback import (
    SimulatedAnnotatorPool,
    SimulatedUser,
    Vote,
    estimate_attentiveness,
    eta_standard_error,
    filter_votes,
    vote_weights,
    votes_needed,
)

ETAS = (0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
MU = 0.85


def _errors(result, pool):
    return np.array([result.eta[u] - eta for u, eta in pool.true_eta.items()])


def _assert_monotone(trace):
    diffs = np.diff(trace)
    assert len(trace) > 5
    assert np.all(diffs >= -1e-9 * abs(trace[-1])), diffs.min()


def test_em_fixed_point_is_the_closed_form_mle():
    """With μ known and ordinary votes only, the MLE is clip((p̂ − ½)/(μ − ½), 0, 1)."""
    votes = [("a", True)] * 70 + [("a", False)] * 30 + [("b", True)] * 40 + [("b", False)] * 60
    votes += [("c", True)] * 88 + [("c", False)] * 12 + [("d", True)] * 97 + [("d", False)] * 3
    result = estimate_attentiveness(votes, mu=0.9)
    assert result.converged
    assert result.eta["a"] == pytest.approx((0.70 - 0.5) / 0.4, abs=1e-6)  # 0.5
    assert result.eta["b"] == pytest.approx(0.0, abs=1e-5)  # picks B more often than chance: η -> 0
    assert result.eta["c"] == pytest.approx((0.88 - 0.5) / 0.4, abs=1e-6)  # 0.95
    assert result.eta["d"] == pytest.approx(1.0, abs=1e-6)  # (0.97 − 0.5)/0.4 > 1, clipped
    assert result.n_votes == {"a": 100, "b": 100, "c": 100, "d": 100}
    _assert_monotone(result.log_likelihood)


def test_posterior_per_vote_follows_bayes_rule():
    result = estimate_attentiveness([("a", True)] * 7 + [("a", False)] * 3 + [("a", True, False)], mu=0.9)
    eta = result.eta["a"]
    assert result.posterior.shape == (11,)
    assert result.posterior[0] == pytest.approx(eta * 0.9 / (eta * 0.9 + (1 - eta) / 2))
    assert result.posterior[7] == pytest.approx(eta * 0.1 / (eta * 0.1 + (1 - eta) / 2))
    assert result.posterior[10] == 0.0  # a wrong control vote cannot be attentive


def test_recovers_eta_within_005_with_mu_known():
    counts = [votes_needed(eta, 0.05, mu=MU, z=3.5) for eta in ETAS]
    assert sum(counts) == 48_353
    assert all(3.5 * eta_standard_error(eta, n, mu=MU) <= 0.05 for eta, n in zip(ETAS, counts, strict=True))
    pool = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=11)
    result = estimate_attentiveness(pool.sample(counts).votes, mu=MU)
    errors = _errors(result, pool)
    assert np.all(np.abs(errors) <= 0.05), errors
    _assert_monotone(result.log_likelihood)


def test_recovers_eta_and_mu_within_005_with_control_votes():
    counts = [votes_needed(eta, 0.05, mu=MU, control_fraction=0.25, z=3.5) for eta in ETAS]
    pool = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=12)
    result = estimate_attentiveness(pool.sample(counts, control_fraction=0.25).votes, mu=None)
    errors = _errors(result, pool)
    assert np.all(np.abs(errors) <= 0.05), errors
    assert abs(result.mu - MU) < 0.01
    _assert_monotone(result.log_likelihood)


def test_two_thousand_votes_meet_the_cramer_rao_bound():
    etas = (0.2, 0.45, 0.7, 0.95)
    assert votes_needed(0.2, 0.05, control_fraction=1.0, z=2.0) > 1_500  # ±0.05 is out of reach at 500 per user
    pool = SimulatedAnnotatorPool.from_etas(etas, MU, seed=13)
    result = estimate_attentiveness(pool.sample(500, control_fraction=1.0).votes, mu=None)
    z_scores = [
        (result.eta[u] - eta) / eta_standard_error(eta, 500, control_fraction=1.0) for u, eta in pool.true_eta.items()
    ]
    assert np.all(np.abs(z_scores) < 3.5), z_scores
    _assert_monotone(result.log_likelihood)


def test_without_controls_mu_is_estimated_up_to_the_anchor():
    """Only η(μ − ½) is identified; the most attentive user is anchored at ``top_eta``."""
    pool = SimulatedAnnotatorPool.from_etas((0.3, 0.6, 1.0), MU, seed=14)
    votes = pool.sample(5000).votes
    result = estimate_attentiveness(votes, mu=None)
    assert max(result.eta.values()) == pytest.approx(1.0)
    assert abs(result.mu - MU) < 0.03
    for user in ("u0", "u1", "u2"):
        p_hat = np.mean([v.picked_a for v in votes if v.user == user])
        assert result.eta[user] * (result.mu - 0.5) == pytest.approx(p_hat - 0.5, abs=2e-3)
    _assert_monotone(result.log_likelihood)
    lower = estimate_attentiveness(votes, mu=None, top_eta=0.8)  # same likelihood, μ − ½ scaled by 1/0.8
    assert lower.eta["u2"] == pytest.approx(0.8) and lower.eta["u0"] == pytest.approx(0.8 * result.eta["u0"], abs=1e-3)
    assert lower.log_likelihood[-1] == pytest.approx(result.log_likelihood[-1], abs=1e-6)
    floor = estimate_attentiveness(votes, mu=None, top_eta=0.5)  # would need μ > 1: μ = 1 bounds the scale
    assert floor.mu == pytest.approx(1.0) and floor.eta["u2"] > 0.6


def test_filtering_and_weighting_raise_pair_accuracy_on_two_thousand_votes():
    """8 users × 250 votes (η = 0.2 … 0.95), 10% controls, μ estimated."""
    pool = SimulatedAnnotatorPool.from_etas(np.linspace(0.2, 0.95, 8), 0.8, seed=15)
    sim = pool.sample(250, control_fraction=0.1)
    result = estimate_attentiveness(sim.votes, mu=None)
    kept = filter_votes(sim.votes, result, threshold=0.5)
    keep_mask = np.array([result.eta[v.user] >= 0.5 for v in sim.votes])
    assert len(kept) == keep_mask.sum() and 0 < len(kept) < len(sim.votes)
    acc_all = sim.picked_better.mean()
    acc_kept = sim.picked_better[keep_mask].mean()
    assert acc_kept > acc_all + 0.03
    for mode in ("eta", "posterior"):
        weights = vote_weights(sim.votes, result, mode=mode)
        assert weights.shape == (len(sim.votes),)
        assert (weights * sim.picked_better).sum() / weights.sum() > acc_all + 0.03


def test_weights_and_filter_handle_unknown_users_and_tuples():
    result = estimate_attentiveness([("a", True)] * 8 + [("a", False)] * 2, mu=0.9)
    votes = [Vote("a", True), ("ghost", True)]
    np.testing.assert_allclose(vote_weights(votes, result), [result.eta["a"], 0.0])
    assert vote_weights(votes, result, mode="posterior")[1] == 0.0
    assert filter_votes(votes, result, threshold=0.1) == [Vote("a", True)]
    with pytest.raises(ValueError):
        vote_weights(votes, result, mode="gamma")
    with pytest.raises(ValueError):
        estimate_attentiveness(votes, mu=0.4)
    empty = estimate_attentiveness([], mu=0.9)
    assert empty.eta == {} and empty.posterior.shape == (0,)


def test_simulator_is_seeded_and_models_bias_and_flips():
    first = SimulatedAnnotatorPool.from_etas((0.4, 0.9), 0.7, seed=3).sample(200, control_fraction=0.5)
    again = SimulatedAnnotatorPool.from_etas((0.4, 0.9), 0.7, seed=3).sample(200, control_fraction=0.5)
    assert first.votes == again.votes
    assert 0.35 < np.mean([v.a_better is not None for v in first.votes]) < 0.65
    assert np.all(first.picked_better[first.attentive])

    lazy = [SimulatedUser("lazy", eta=0.0, position_bias=0.9)]
    shuffled = SimulatedAnnotatorPool(lazy, mu=0.8, seed=1).sample(4000)
    fixed = SimulatedAnnotatorPool(lazy, mu=0.8, seed=1, randomise_order=False).sample(4000)
    assert abs(np.mean([v.picked_a for v in shuffled.votes]) - 0.5) < 0.03  # randomised order cancels the bias
    assert abs(np.mean([v.picked_a for v in fixed.votes]) - 0.9) < 0.03  # A always left: bias leaks into z

    flipper = SimulatedAnnotatorPool([SimulatedUser("f", eta=0.8, flip_rate=0.1)], mu=0.85, seed=2).sample(20_000)
    estimate = estimate_attentiveness(flipper.votes, mu=0.85).eta["f"]
    assert abs(estimate - 0.8 * (1 - 2 * 0.1)) < 0.05  # flips shrink apparent attentiveness to η(1 − 2f)
