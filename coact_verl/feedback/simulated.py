"""A seeded pool of simulated annotators voting in comparison mode (for tests and research).

For each vote: model A's response is the better one with probability μ; the two responses are shown in a
random left/right order (or A always left with ``randomise_order=False``); with probability η the user is
attentive and picks the better response, except that with probability ``flip_rate`` they pick the worse one
by mistake; otherwise they click the left option with probability ``position_bias``. Position bias is
harmless to the attentiveness model under a randomised order and biases it otherwise; a flip rate f shrinks
the apparent attentiveness to about η(1 − 2f). A share ``control_fraction`` of votes is marked as control
(the better response is revealed to the estimator through ``Vote.a_better``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from coact_verl.feedback.attentiveness import Vote


@dataclass(frozen=True)
class SimulatedUser:
    """One simulated annotator.

    Args:
        user_id: identifier written into the votes.
        eta: probability of an attentive vote, in [0, 1].
        position_bias: probability that an inattentive vote clicks the left option.
        flip_rate: probability that an attentive vote picks the worse response anyway.
    """

    user_id: str
    eta: float
    position_bias: float = 0.5
    flip_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("eta", "position_bias", "flip_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")


@dataclass
class SimulatedVotes:
    """Votes and the hidden truth behind them, all arrays of shape ``(N,)`` aligned with ``votes``."""

    votes: list[Vote]
    a_better: np.ndarray
    attentive: np.ndarray
    picked_better: np.ndarray


class SimulatedAnnotatorPool:
    """Users with known η, position bias and flip rate; ``sample`` draws votes reproducibly from ``seed``.

    Args:
        users: the annotators.
        mu: probability that model A's response is the better one, in [0, 1].
        seed: RNG seed; successive ``sample`` calls continue the same stream.
        randomise_order: show A left or right at random (else always left).
    """

    def __init__(self, users: Sequence[SimulatedUser], mu: float, seed: int = 0, randomise_order: bool = True) -> None:
        if not 0.0 <= mu <= 1.0:
            raise ValueError("mu must lie in [0, 1]")
        if len({u.user_id for u in users}) != len(users):
            raise ValueError("user ids must be unique")
        self.users = list(users)
        self.mu = mu
        self.randomise_order = randomise_order
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_etas(cls, etas: Sequence[float], mu: float, seed: int = 0, **user_kwargs: float) -> SimulatedAnnotatorPool:
        """Users ``u0, u1, ...`` with the given η and shared ``position_bias`` / ``flip_rate``."""
        return cls([SimulatedUser(f"u{i}", eta, **user_kwargs) for i, eta in enumerate(etas)], mu, seed)

    @property
    def true_eta(self) -> dict[str, float]:
        return {u.user_id: u.eta for u in self.users}

    def sample(
        self, votes_per_user: int | Sequence[int] | Mapping[str, int], control_fraction: float = 0.0
    ) -> SimulatedVotes:
        """Draw votes for every user, shuffled into one stream.

        Args:
            votes_per_user: one count for all users, a count per user (in order), or ``{user_id: count}``.
            control_fraction: share of votes whose better response is revealed (control votes).
        """
        if isinstance(votes_per_user, int):
            counts = [votes_per_user] * len(self.users)
        elif isinstance(votes_per_user, Mapping):
            counts = [int(votes_per_user.get(u.user_id, 0)) for u in self.users]
        else:
            counts = [int(c) for c in votes_per_user]
        if len(counts) != len(self.users):
            raise ValueError("votes_per_user must give one count per user")
        owner = np.repeat(np.arange(len(self.users)), counts)
        n = owner.size
        eta = np.array([u.eta for u in self.users])[owner]
        bias = np.array([u.position_bias for u in self.users])[owner]
        flip = np.array([u.flip_rate for u in self.users])[owner]
        rng = self.rng
        a_better = rng.random(n) < self.mu
        attentive = rng.random(n) < eta
        a_left = rng.random(n) < 0.5 if self.randomise_order else np.ones(n, dtype=bool)
        picked_better = np.where(attentive, rng.random(n) >= flip, False)
        clicked_left = rng.random(n) < bias
        picked_a = np.where(attentive, picked_better == a_better, clicked_left == a_left)
        picked_better = picked_a == a_better
        control = rng.random(n) < control_fraction
        order = rng.permutation(n)
        votes = [
            Vote(self.users[owner[j]].user_id, bool(picked_a[j]), bool(a_better[j]) if control[j] else None)
            for j in order
        ]
        return SimulatedVotes(votes, a_better[order], attentive[order], picked_better[order])
