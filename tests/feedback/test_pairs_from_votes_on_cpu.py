"""Votes and edits → training pairs: the EM mapping, counts, weights, the η̂ filter and its effect on accuracy."""

import itertools

import numpy as np
import pytest

from coact_verl.feedback import (
    SimulatedAnnotatorPool,
    Vote,
    estimate_attentiveness,
    estimate_attentiveness_from_counts,
)
from coact_verl.feedback.pairs_from_votes import (
    CONTROL_RIGHT,
    CONTROL_WRONG,
    ORDINARY_STRONGER,
    ORDINARY_WEAKER,
    EditRecord,
    VoteRecord,
    em_vote,
    pairs_from_feedback,
    vote_counts,
    vote_kind,
)
from coact_verl.rewards import Pair

ETAS = (0.2, 0.5, 0.8, 0.95)
MU = 0.8


def _vote(i, user, stronger, picked, better=None, a="A", b="B"):
    return VoteRecord(i, user, f"p{i}", f"q{i}", "gsm8k", f"{a}{i}", f"{b}{i}", stronger, picked, better)


def records_from_simulation(sim, seed=0):
    """HTTP-style vote records for simulated votes: the stronger model's response sits on a random side, the
    better response reads ``good …`` and the worse ``bad …``."""
    rng = np.random.default_rng(seed)
    records = []
    for j, (vote, a_better) in enumerate(zip(sim.votes, sim.a_better, strict=True)):
        stronger = "a" if rng.random() < 0.5 else "b"
        weaker = "b" if stronger == "a" else "a"
        better = stronger if a_better else weaker
        texts = {better: f"good {j}", ("b" if better == "a" else "a"): f"bad {j}"}
        record = VoteRecord(
            j + 1, vote.user, f"p{j}", f"q{j}", "gsm8k", texts["a"], texts["b"], stronger,
            stronger if vote.picked_a else weaker, None if vote.a_better is None else better,
        )  # fmt: skip
        records.append(record)
    return records


def test_em_mapping_and_kinds_cover_every_case():
    for stronger, picked, better in itertools.product("ab", "ab", ("a", "b", None)):
        vote = _vote(1, "u", stronger, picked, better)
        mapped = em_vote(vote)
        assert mapped.user == "u" and mapped.picked_a == (picked == stronger)
        assert mapped.a_better == (None if better is None else better == stronger)
        if better is None:
            assert vote_kind(vote) == (ORDINARY_STRONGER if picked == stronger else ORDINARY_WEAKER)
        else:
            assert vote_kind(vote) == (CONTROL_RIGHT if picked == better else CONTROL_WRONG)
    with pytest.raises(ValueError):
        _vote(1, "u", "c", "a")
    with pytest.raises(ValueError):
        _vote(1, "u", "a", "a", "x")


def test_counts_em_equals_vote_em():
    pool = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=21)
    records = records_from_simulation(pool.sample(400, control_fraction=0.2))
    votes = [em_vote(r) for r in records]
    counts = vote_counts(records)
    assert sum(map(sum, counts.values())) == len(records)
    for mu in (MU, None):
        by_votes = estimate_attentiveness(votes, mu)
        by_counts = estimate_attentiveness_from_counts(counts, mu)
        assert by_counts.eta == pytest.approx(by_votes.eta, abs=1e-12)
        assert by_counts.mu == pytest.approx(by_votes.mu, abs=1e-12)
        assert by_counts.log_likelihood == pytest.approx(by_votes.log_likelihood)
        assert by_counts.posterior.shape == (len(ETAS), 4)
    with pytest.raises(ValueError):
        estimate_attentiveness_from_counts({"u": (1, -1, 0, 0)}, MU)


def test_records_reproduce_the_simulated_votes():
    sim = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=22).sample(300, control_fraction=0.1)
    records = records_from_simulation(sim, seed=5)
    assert [em_vote(r) for r in records] == sim.votes
    assert {r.stronger for r in records} == {"a", "b"}  # both sides used
    pairs = pairs_from_feedback(records, {u: 1.0 for u in ("u0", "u1", "u2", "u3")})
    np.testing.assert_array_equal([p.chosen.startswith("good") for p in pairs], sim.picked_better)


def test_pairs_weights_filter_order_and_edits():
    records = [
        _vote(1, 7, "a", "a"),
        EditRecord(2, 9, "p2", "q2", "math", "old", "new"),
        _vote(3, 8, "b", "a", "b"),
        _vote(4, 7, "b", "b"),
        _vote(5, 99, "a", "b"),  # annotator without an estimate
    ]
    eta = {7: 0.9, 8: 0.3}
    pairs = pairs_from_feedback(records, eta, min_eta=0.5)
    assert [(p.id, p.kind) for p in pairs] == [(1, "vote"), (2, "edit"), (4, "vote")]
    first, edit, fourth = pairs
    assert (first.chosen, first.rejected, first.weight, first.annotator) == ("A1", "B1", 0.9, 7)
    assert (fourth.chosen, fourth.rejected) == ("B4", "A4")  # chosen = the picked side, whatever is stronger
    assert (edit.chosen, edit.rejected, edit.weight, edit.prompt, edit.task) == ("new", "old", 1.0, "q2", "math")
    everything = pairs_from_feedback(records, eta, min_eta=0.0)
    assert [p.id for p in everything] == [1, 2, 3, 4, 5]
    assert (everything[2].chosen, everything[2].weight) == ("A3", 0.3) and everything[4].weight == 0.0
    assert [p.id for p in pairs_from_feedback(records, eta, min_eta=0.95)] == [2]  # edits are never filtered
    assert edit.as_pair() == Pair("p2", "new", "old", "edit", 1.0)
    assert first.as_pair() == Pair("p1", "A1", "B1", "vote", 0.9)


def test_filtering_by_eta_raises_pair_accuracy():
    """2,000 votes per user, η ∈ {0.2, 0.5, 0.8, 0.95}, μ = 0.8 known: accuracy of a user's pairs is
    η + (1 − η)/2, so all votes give ≈ 0.81 and users with η̂ ≥ 0.5 give ≈ 0.88 or more."""
    sim = SimulatedAnnotatorPool.from_etas(ETAS, MU, seed=23).sample(2000)
    records = records_from_simulation(sim, seed=6)
    eta = estimate_attentiveness_from_counts(vote_counts(records), MU).eta

    def accuracy(min_eta):
        pairs = pairs_from_feedback(records, eta, min_eta)
        return np.mean([p.chosen.startswith("good") for p in pairs]), pairs

    acc_all, all_pairs = accuracy(0.0)
    acc_kept, kept = accuracy(0.5)
    assert len(all_pairs) == len(records) and 0 < len(kept) < len(records)
    assert abs(acc_all - sim.picked_better.mean()) < 1e-12
    assert acc_kept > acc_all + 0.05, (acc_all, acc_kept)
    weighted = sum(p.weight * p.chosen.startswith("good") for p in all_pairs) / sum(p.weight for p in all_pairs)
    assert weighted > acc_all + 0.03


def test_vote_tuple_interop():
    assert em_vote(_vote(1, "u", "a", "b", "b")) == Vote("u", False, False)
