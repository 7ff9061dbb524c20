"""Per-user attentiveness from comparison votes, by EM (a user-behaviour model for "comparison mode").

**Model.** Each vote j of user u compares a response of model A with one of model B; z_j = 1 when the user
picked A. A's response is the better one with probability μ > ½. With probability η_u the user is attentive
and picks the better response; otherwise they pick at random. With ℓ_j = P(z_j | attentive):

* ordinary vote: ℓ_j = μ^z (1 − μ)^(1−z), so P(z_j = 1) = η_u μ + (1 − η_u)/2;
* control vote (the better response is known): ℓ_j = 1 if the pick is the better response, else 0.

E-step: γ_j = η_u ℓ_j / (η_u ℓ_j + (1 − η_u)/2), the posterior that vote j was attentive.
M-step: η_u = mean of γ_j over u's votes; when μ is estimated, μ = Σ γ_j z_j / Σ γ_j over ordinary votes
(clipped to (½, 1], which keeps each step an ascent step). The complete-data objective is separable in
(η, μ), so every iteration is an exact EM step and the log-likelihood never decreases. Votes enter only
through per-user counts of four kinds (ordinary A / ordinary B / control right / control wrong), so one
iteration costs O(users) whatever the number of votes; :func:`estimate_attentiveness_from_counts` takes
those counts directly.

**Identifiability.** Ordinary votes only reveal each user's pick rate ½ + η_u (μ − ½):

* μ known: η_u is identified; its MLE is (p̂_u − ½)/(μ − ½) clipped to [0, 1], the EM fixed point.
* μ estimated *with* control votes: controls pin η_u for the users who answer them, which pins μ, which
  pins everyone else. This is the recommended deployment (seed the queue with gold-vs-wrong pairs).
* μ estimated *without* control votes: only η_u (μ − ½) is identified; any rescaling η → η/c,
  μ − ½ → c (μ − ½) has the same likelihood. The scale is then fixed by setting the most attentive user's η
  to ``top_eta`` (default 1), or to the smallest value that keeps μ ≤ 1 if that is larger: estimates are
  relative and, if nobody is fully attentive, biased down.

**Precision.** Even in the best case the per-vote Fisher information for η is bounded: 1/(1 − η²) for a
control vote and (μ − ½)²/(p(1 − p)) for an ordinary one (p the pick rate). Recovering η within ±0.05 at 3σ
therefore needs about 3,500 control votes from a user with η = 0.2 and several thousand ordinary ones;
:func:`votes_needed` computes the number. Filtering and weighting are useful with far fewer votes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import numpy as np
from numpy.typing import NDArray

_TINY = 1e-300
_MU_MIN = 0.5 + 1e-6


class Vote(NamedTuple):
    """One comparison vote: ``user`` picked A (``picked_a``); ``a_better`` is set only for control votes."""

    user: Hashable
    picked_a: bool
    a_better: bool | None = None


VoteLike: TypeAlias = "Vote | tuple[Hashable, bool] | tuple[Hashable, bool, bool | None]"
"""A :class:`Vote` or a plain ``(user, picked_a[, a_better])`` tuple."""


@dataclass
class AttentivenessResult:
    """EM output.

    Attributes:
        eta: η̂_u per user, in [0, 1].
        mu: μ̂ (the given μ when it was fixed; ``init_mu`` when estimated from no ordinary vote).
        posterior: γ_j per vote in input order, shape ``(N,)``: P(attentive | vote).
        log_likelihood: observed-data log-likelihood (nats) at the start and after every iteration.
        iterations: EM iterations run.
        converged: whether the parameter change fell below ``tol`` before ``max_iter``.
        n_votes: votes per user.
    """

    eta: dict[Hashable, float]
    mu: float
    posterior: np.ndarray
    log_likelihood: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    n_votes: dict[Hashable, int] = field(default_factory=dict)


def _as_votes(votes: Sequence[VoteLike]) -> list[Vote]:
    return [v if isinstance(v, Vote) else Vote(*v) for v in votes]


def _likelihoods(mu: float) -> np.ndarray:
    """ℓ for the four vote kinds (ordinary A, ordinary B, control right, control wrong), shape ``(4,)``."""
    return np.array([mu, 1.0 - mu, 1.0, 0.0])


def _kinds(votes: Sequence[Vote]) -> np.ndarray:
    kinds = np.empty(len(votes), dtype=np.int64)
    for j, v in enumerate(votes):
        if v.a_better is None:
            kinds[j] = 0 if v.picked_a else 1
        else:
            kinds[j] = 2 if bool(v.picked_a) == bool(v.a_better) else 3
    return kinds


def _posterior(eta: NDArray[np.float64], ell: NDArray[np.float64]) -> NDArray[np.float64]:
    """γ = η ℓ / (η ℓ + (1 − η)/2); broadcasts ``eta (U, 1)`` against ``ell (4,)``."""
    num = eta * ell
    return num / np.maximum(num + (1.0 - eta) / 2.0, _TINY)


def _log_likelihood(counts: np.ndarray, eta: np.ndarray, ell: np.ndarray) -> float:
    prob = eta[:, None] * ell[None, :] + (1.0 - eta[:, None]) / 2.0
    return float(np.sum(counts * np.log(np.maximum(prob, _TINY))))


def _check_args(mu: float | None, init_eta: float, init_mu: float, top_eta: float) -> None:
    if mu is not None and not 0.5 < mu <= 1.0:
        raise ValueError(f"mu must lie in (0.5, 1], got {mu}")
    if not 0.0 < init_eta < 1.0 or not 0.5 < init_mu < 1.0 or not 0.0 < top_eta <= 1.0:
        raise ValueError("init_eta must lie in (0, 1), init_mu in (0.5, 1) and top_eta in (0, 1]")


def _fit(
    counts: np.ndarray,
    mu: float | None,
    init_eta: float,
    init_mu: float,
    top_eta: float,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, float, list[float], int, bool]:
    """EM on per-user counts of the four vote kinds, shape ``(U, 4)``: (η̂ ``(U,)``, μ̂, trace, iterations, converged)."""
    n_user = counts.sum(axis=1)
    anchor = mu is None and counts[:, 2:].sum() == 0
    eta = np.full(len(counts), init_eta)
    mu_hat = float(mu) if mu is not None else init_mu
    trace = [_log_likelihood(counts, eta, _likelihoods(mu_hat))] if len(counts) else []
    converged, it = not len(counts), 0
    while not converged and it < max_iter:
        it += 1
        gamma = _posterior(eta[:, None], _likelihoods(mu_hat)[None, :])  # (U, 4)
        new_eta = np.clip((counts * gamma).sum(axis=1) / np.maximum(n_user, 1.0), 0.0, 1.0)
        new_mu = mu_hat
        if mu is None:
            att_a, att_b = float((counts[:, 0] * gamma[:, 0]).sum()), float((counts[:, 1] * gamma[:, 1]).sum())
            if att_a + att_b > 0:
                new_mu = min(max(att_a / (att_a + att_b), _MU_MIN), 1.0)
            top = float(new_eta.max())
            if anchor and top > 0:  # move along the flat ridge (same likelihood) to max η = top_eta, μ ≤ 1
                scale = min(top / top_eta, 0.5 / (new_mu - 0.5))
                new_eta = np.clip(new_eta / scale, 0.0, 1.0)
                new_mu = min(max(0.5 + (new_mu - 0.5) * scale, _MU_MIN), 1.0)
        converged = max(float(np.max(np.abs(new_eta - eta))), abs(new_mu - mu_hat)) < tol
        eta, mu_hat = new_eta, new_mu
        trace.append(_log_likelihood(counts, eta, _likelihoods(mu_hat)))
    return eta, mu_hat, trace, it, converged


def estimate_attentiveness(
    votes: Sequence[VoteLike],
    mu: float | None,
    *,
    init_eta: float = 0.5,
    init_mu: float = 0.75,
    top_eta: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 20_000,
) -> AttentivenessResult:
    """Estimate η_u per user (and μ when ``mu is None``) by EM; see the module docstring for the model.

    Args:
        votes: ``Vote`` or ``(user, picked_a[, a_better])`` tuples; ``a_better`` marks control votes.
        mu: P(A is better) in (½, 1], or ``None`` to estimate it jointly.
        init_eta: starting η for every user, in (0, 1).
        init_mu: starting μ when estimated, in (½, 1).
        top_eta: scale anchor used only when μ is estimated and there is no control vote.
        tol: stop when no parameter moves by more than this in one iteration.
        max_iter: iteration cap.
    """
    _check_args(mu, init_eta, init_mu, top_eta)
    parsed = _as_votes(votes)
    users = list(dict.fromkeys(v.user for v in parsed))
    index = {u: i for i, u in enumerate(users)}
    user_idx = np.array([index[v.user] for v in parsed], dtype=np.int64)
    kinds = _kinds(parsed)
    counts = np.zeros((len(users), 4))
    np.add.at(counts, (user_idx, kinds), 1.0)
    eta, mu_hat, trace, it, converged = _fit(counts, mu, init_eta, init_mu, top_eta, tol, max_iter)
    gamma = _posterior(eta[:, None], _likelihoods(mu_hat)[None, :])
    posterior = gamma[user_idx, kinds] if parsed else np.zeros(0)
    return AttentivenessResult(
        eta={u: float(eta[i]) for i, u in enumerate(users)},
        mu=mu_hat,
        posterior=posterior,
        log_likelihood=trace,
        iterations=it,
        converged=converged,
        n_votes={u: int(counts[i].sum()) for i, u in enumerate(users)},
    )


def estimate_attentiveness_from_counts(
    counts: Mapping[Hashable, Sequence[float]],
    mu: float | None,
    *,
    init_eta: float = 0.5,
    init_mu: float = 0.75,
    top_eta: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 20_000,
) -> AttentivenessResult:
    """:func:`estimate_attentiveness` from per-user vote counts (the EM's sufficient statistics).

    Args:
        counts: ``{user: (ordinary A, ordinary B, control right, control wrong)}`` vote counts, where "A" is a
            pick of model A's response and "right" a pick of the known better response.
        mu, init_eta, init_mu, top_eta, tol, max_iter: as for :func:`estimate_attentiveness`.

    Returns:
        The same result, except that ``posterior`` holds γ per user (in ``counts`` order) and vote kind, shape
        ``(U, 4)``.
    """
    _check_args(mu, init_eta, init_mu, top_eta)
    users = list(counts)
    table = np.array([[float(c) for c in counts[u]] for u in users], dtype=np.float64).reshape(len(users), 4)
    if np.any(table < 0) or not np.all(np.isfinite(table)):
        raise ValueError("counts must be finite and non-negative")
    eta, mu_hat, trace, it, converged = _fit(table, mu, init_eta, init_mu, top_eta, tol, max_iter)
    return AttentivenessResult(
        eta={u: float(eta[i]) for i, u in enumerate(users)},
        mu=mu_hat,
        posterior=_posterior(eta[:, None], _likelihoods(mu_hat)[None, :]),
        log_likelihood=trace,
        iterations=it,
        converged=converged,
        n_votes={u: int(table[i].sum()) for i, u in enumerate(users)},
    )


def vote_weights(
    votes: Sequence[VoteLike], result: AttentivenessResult, mode: str = "eta", unknown_eta: float = 0.0
) -> np.ndarray:
    """Loss weight per vote, shape ``(N,)``.

    ``mode="eta"`` gives each vote its user's η̂; ``mode="posterior"`` gives γ_j, the posterior that this vote
    was attentive under ``result``'s parameters. Users absent from ``result`` count as η = ``unknown_eta``.
    """
    parsed = _as_votes(votes)
    eta = np.array([result.eta.get(v.user, unknown_eta) for v in parsed], dtype=np.float64)
    if mode == "eta":
        return eta
    if mode == "posterior":
        ell = _likelihoods(result.mu)[_kinds(parsed)] if parsed else np.zeros(0)
        return _posterior(eta, ell)
    raise ValueError(f"mode must be 'eta' or 'posterior', got {mode!r}")


def filter_votes(votes: Sequence[VoteLike], result: AttentivenessResult, threshold: float = 0.5) -> list[Vote]:
    """Votes of users with η̂ ≥ ``threshold`` (users absent from ``result`` are dropped)."""
    return [v for v in _as_votes(votes) if result.eta.get(v.user, -1.0) >= threshold]


def eta_standard_error(eta: float, n_votes: int, mu: float | None = None, control_fraction: float = 0.0) -> float:
    """Cramér–Rao standard error of η̂ for one user with ``n_votes`` votes (μ treated as known).

    Per-vote Fisher information: ``control_fraction``/(1 − η²) + (1 − ``control_fraction``)·(μ − ½)²/(p(1 − p))
    with p = ½ + η(μ − ½). ``mu`` is needed unless every vote is a control.
    """
    if n_votes <= 0:
        return math.inf
    info = control_fraction / max(1.0 - eta * eta, 1e-12)
    if control_fraction < 1.0:
        if mu is None:
            raise ValueError("mu is needed when some votes are not controls")
        p = 0.5 + eta * (mu - 0.5)
        info += (1.0 - control_fraction) * (mu - 0.5) ** 2 / max(p * (1.0 - p), 1e-12)
    return 1.0 / math.sqrt(n_votes * info) if info > 0 else math.inf


def votes_needed(
    eta: float, tol: float = 0.05, mu: float | None = None, control_fraction: float = 0.0, z: float = 3.0
) -> int:
    """Votes one user needs so that ``z`` Cramér–Rao standard errors of η̂ fit within ``tol``."""
    unit = eta_standard_error(eta, 1, mu, control_fraction)
    return math.ceil((z * unit / tol) ** 2)
