"""Routing policies: which groups go to the oracle, for a whole step or one group at a time.

Policies are looked up by name in :data:`POLICIES` (``RouterConfig.policy``); :func:`register_policy` adds one.

**Step mode** (``route_step``: all of a step's groups at once, deterministic, ties broken by group index):

* ``coact``: (0) audit: ⌊audit_share·B⌋ (with carry) uniformly random self-labelled groups, unanimous ones
  included (``audit``); (1) spot checks: each unanimous group is audited with probability
  ``spot_check_rate`` while budget remains; (2) the remaining budget B is split into B_knn = ⌊knn_share·B⌋
  and B_low = B − B_knn; (3) the B_low non-unanimous groups with the lowest ρ go to the oracle
  (``low_agreement``; this can reach into the self band when few groups are below τ_self); (4) B_knn of the
  remaining self-band groups with the largest k-NN distance to oracle-verified prompts go to the oracle
  (``knn``). Groups without an embedding rank after embedded ones; before anything is verified the k-NN
  share falls back to the lowest-ρ members of the self band (CoAct's iteration 0), and a k-NN share the
  self band cannot fill goes to the next lowest-ρ groups. Everything else keeps its default (SELF or DROP).
  Among groups of equal ρ, the one with the larger runner-up cluster (a closer contest) goes first.
* ``adaptive``: audit and spot checks as above, then the budget is split across the branches
  ``low_agreement``, ``knn`` (once some prompt is verified) and ``spot_check`` (unanimous groups) by
  Thompson sampling on Beta posteriors of each branch's measured yield (the share of its oracle labels
  that changed the training target), see :meth:`~coact_verl.router.router.Router.branch_shares`.
* ``lowest_agreement``: audit, spot checks, then the whole budget to the lowest-ρ non-unanimous groups.
* ``random``: the budget goes to uniformly random groups (any band); the rest keep their default.
* ``self_only``: never the oracle (TTRL-like). ``gold_all``: every group to the oracle, ignoring budgets.

The band and default route of a group come from the router (:meth:`~coact_verl.router.router.Router.band`):
CoAct's fixed τ_self, unless ``self_label_precision`` calibrates it or the audit's collapse guard raised it.

**Online mode** (``route_online``: groups stream in one at a time). Quota pacing replaces sorting. Each
acquisition branch gets a quota of the step budget (``coact``: 1 − knn_share and knn_share of what the
audit leaves; ``adaptive``: its Thompson share) and keeps a window of the last W scores of the groups it
may route (ρ of non-unanimous groups; k-NN distances of self-band groups; before anything is verified, ρ
of self-band groups). A candidate is admitted when its score lies in the best q of its branch's window,
with q = (quota left) / (1 + expected candidates still to come in the step), so the quota is used up by
the step's end; quota a branch cannot place with the candidates still expected flows to the others.
``lowest_agreement`` (``paces_by_value``) instead takes a group unless the groups still to come are expected
to put its label to better use (optimal stopping, :func:`stopping_values`). Whatever the policy, a group is
admitted when holding the label back would risk, with probability above 0.1%, too few routable groups to
come to spend the step's labels (:func:`shortfall_chance`). When the step size is not announced
(``begin_step(None)``) the router expects as many groups as the previous step had and caps the spend at
⌈s·seen⌉ at all times; in the very first such step it paces at the quota's rate. Ties in the windows (ρ takes
few values) are broken at random so that the expected admitted share equals the target share exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from coact_verl.config import RouterConfig
from coact_verl.router.bands import (
    Band,
    GroupView,
    Reason,
    Route,
    band_of,
    default_route,
    oracle_route,
    split_budget,
)

# Scores of the k-NN branch for the given group indices (larger = farther from verified prompts; NaN for a
# group without embedding), or ``None`` when no prompt has been verified yet.
KnnScorer = Callable[[Sequence[GroupView], Sequence[int]], np.ndarray | None]


def _fixed_band(cfg: RouterConfig) -> Callable[[GroupView], Band]:
    return lambda g: band_of(g, cfg.self_label_threshold)


def _fixed_default(cfg: RouterConfig) -> Callable[[GroupView], Route]:
    return lambda g: default_route(g, cfg.self_label_threshold, cfg.self_label_unanimous)


@dataclass
class StepContext:
    """What a policy needs besides the groups in step mode.

    ``band``/``default`` give a group's band and its route when the oracle does not see it (the router passes
    its calibrated, audit-guarded versions; without them the fixed τ_self rule applies). ``shares`` splits a
    budget across acquisition branches (the ``adaptive`` policy) and ``audit_count`` is the number of audit
    labels to take out of a step budget.
    """

    cfg: RouterConfig
    rng: np.random.Generator
    knn_scores: KnnScorer
    band: Callable[[GroupView], Band] | None = None
    default: Callable[[GroupView], Route] | None = None
    shares: Callable[[Sequence[str]], dict[str, float]] | None = None
    audit_count: Callable[[int], int] | None = None

    def __post_init__(self) -> None:
        if self.band is None:
            self.band = _fixed_band(self.cfg)
        if self.default is None:
            self.default = _fixed_default(self.cfg)
        if self.shares is None:
            self.shares = lambda branches: {b: 1.0 / len(branches) for b in branches} if branches else {}
        if self.audit_count is None:
            self.audit_count = lambda budget: 0


class OnlineContext(Protocol):
    """Pacing state a policy queries in online mode (implemented by :class:`~coact_verl.router.router.Router`)."""

    cfg: RouterConfig
    rng: np.random.Generator

    def has_budget(self) -> bool:
        """Whether the per-step and total oracle budgets both have room for one more group."""
        ...

    def band(self, group: GroupView) -> Band:
        """The group's band under the router's current (calibrated, guarded) self-label rule."""
        ...

    def default(self, group: GroupView) -> Route:
        """The group's route when the oracle does not see it."""
        ...

    def admit(self, branch: str, group: GroupView) -> bool:
        """Quota pacing: whether ``branch`` spends one of its labels of this step on ``group``."""
        ...

    def admit_low_agreement(self, group: GroupView, share: float) -> bool:
        """Whether ρ lies in the lowest ``share`` of the recent agreements of all groups."""
        ...

    def admit_far(self, group: GroupView, share: float) -> bool:
        """Whether a self-band group is among the farthest ``share`` (of all groups) from verified prompts."""
        ...


class RoutingPolicy(Protocol):
    """A named routing rule with a step mode and an online mode.

    ``uses_knn``: the router keeps k-NN distances of self-band groups for it. ``paces_by_value``: its single
    low-agreement branch is paced online by optimal stopping (:func:`stopping_values`) rather than by quantiles.
    ``routes_unanimous``: it may send unanimous groups to the oracle without spot checks or an audit.
    """

    uses_knn: bool
    paces_by_value: bool
    routes_unanimous: bool

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]: ...

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route: ...


POLICIES: dict[str, RoutingPolicy] = {}


def register_policy(name: str) -> Callable[[type], type]:
    """Class decorator: register an instance of the class under ``name`` (a duplicate name is an error)."""

    def wrap(cls: type) -> type:
        if name in POLICIES:
            raise ValueError(f"routing policy {name!r} is already registered")
        POLICIES[name] = cls()
        return cls

    return wrap


def get_policy(name: str) -> RoutingPolicy:
    """The registered policy called ``name``."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown routing policy {name!r}; known: {sorted(POLICIES)}") from None


# ---------------------------------------------------------------------------------------------- primitives
def lowest_agreement(groups: Sequence[GroupView], candidates: Sequence[int], k: int) -> list[int]:
    """The ``k`` candidate indices with the lowest agreement (ties: larger runner-up share, then lower index)."""
    return sorted(candidates, key=lambda i: (groups[i].agreement, -(groups[i].runner_up or 0.0), i))[: max(k, 0)]


def farthest(groups: Sequence[GroupView], candidates: Sequence[int], scores: np.ndarray | None, k: int) -> list[int]:
    """The ``k`` candidates with the largest score; NaN scores (and ``scores=None``) rank last by agreement."""
    if scores is None:
        return lowest_agreement(groups, candidates, k)
    keyed = {i: (-float(s) if np.isfinite(s) else np.inf) for i, s in zip(candidates, scores, strict=True)}
    return sorted(candidates, key=lambda i: (keyed[i], groups[i].agreement, i))[: max(k, 0)]


def admit_lowest(window: Sequence[float], value: float, share: float, rng: np.random.Generator) -> bool:
    """Pacing test: does ``value`` fall in the lowest ``share`` of ``window`` (which should contain it)?

    With F< and F= the window shares below and equal to ``value``: admit if F< + F= ≤ share, refuse if
    F< ≥ share, else admit with probability (share − F<) / F=, so that the expected admitted share is
    ``share`` even when many values tie.
    """
    arr = np.asarray(window, dtype=np.float64)
    if share <= 0.0 or arr.size == 0:
        return False
    below = float(np.mean(arr < value))
    equal = float(np.mean(arr == value))
    if below + equal <= share:
        return True
    if below >= share or equal == 0.0:
        return False
    return bool(rng.random() < (share - below) / equal)


def admit_highest(window: Sequence[float], value: float, share: float, rng: np.random.Generator) -> bool:
    """Mirror of :func:`admit_lowest`: does ``value`` fall in the highest ``share`` of ``window``?"""
    return admit_lowest([-v for v in window], -value, share, rng)


def stopping_values(chances: np.ndarray, values: np.ndarray, groups_left: int, labels: int) -> NDArray[np.float64]:
    """Expected value an optimal online picker still collects: ``V[m, k]`` with m groups to come and k labels.

    Each coming group independently is a candidate worth ``values[j]`` with probability ``chances[j]`` (the
    chances sum to at most 1; the rest are not candidates). The optimal rule takes a candidate worth v with
    m groups after it and k labels left iff v + V[m, k-1] ≥ V[m, k] (:func:`take_now`).

    Args:
        chances: (L,) probability that the next group is a candidate of each value.
        values: (L,) their values.
        groups_left: largest m of the table.
        labels: largest k of the table.

    Returns:
        (groups_left + 1, labels + 1) array; ``V[0, :] = V[:, 0] = 0``.
    """
    table = np.zeros((groups_left + 1, labels + 1))
    if labels == 0:
        return table
    chances = np.asarray(chances, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)[:, None]
    other = max(1.0 - float(chances.sum()), 0.0)
    for m in range(1, groups_left + 1):
        keep = table[m - 1, 1:]  # k labels kept for later, k = 1..labels
        take = values + table[m - 1, :-1]  # (L, labels): take this one, k - 1 left for later
        table[m, 1:] = other * keep + chances @ np.maximum(keep, take)
    return table


def shortfall_chance(chance: float, groups: int, labels: int) -> float:
    """P(Bin(groups, chance) < labels): the probability that fewer than ``labels`` candidates come among
    ``groups`` groups, each a candidate with probability ``chance``. An online picker that holds ``labels``
    labels with ``groups`` groups to come ends the step with a label unspent at least this often."""
    if labels <= 0:
        return 0.0
    if labels > groups:
        return 1.0
    p = min(max(float(chance), 0.0), 1.0)
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    mean, sd = groups * p, math.sqrt(groups * p * (1.0 - p))
    if mean - labels > 8.0 * sd + 1.0:  # eight standard deviations into the tail: negligible, skip the sum
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(groups + 1)
    return min(
        sum(
            math.exp(log_n - math.lgamma(j + 1) - math.lgamma(groups - j + 1) + j * log_p + (groups - j) * log_q)
            for j in range(labels)
        ),
        1.0,
    )


def take_now(table: np.ndarray, value: float, groups_after: int, labels_left: int) -> bool:
    """The optimal stopping rule on a :func:`stopping_values` table (beyond the table's m: the last row)."""
    if labels_left <= 0:
        return False
    m = min(max(groups_after, 0), table.shape[0] - 1)
    k = min(labels_left, table.shape[1] - 1)
    return bool(value + table[m, k - 1] >= table[m, k] - 1e-12)


def _spot_checks(groups: Sequence[GroupView], routes: list[Route], budget: int, ctx: StepContext) -> int:
    """Send unanimous groups to the oracle with probability ``spot_check_rate``; returns the budget left."""
    rate = ctx.cfg.spot_check_rate
    unanimous = [i for i, g in enumerate(groups) if g.is_unanimous and not routes[i].is_oracle]
    if rate <= 0.0 or not unanimous:
        return budget
    draws = ctx.rng.random(len(unanimous))
    for i, u in zip(unanimous, draws, strict=True):
        if budget > 0 and u < rate:
            routes[i] = oracle_route(Reason.SPOT_CHECK)
            budget -= 1
    return budget


def _audit(groups: Sequence[GroupView], routes: list[Route], budget: int, ctx: StepContext) -> int:
    """Send ``audit_count(budget)`` uniformly random self-labelled groups to the oracle; returns the budget left."""
    want = min(ctx.audit_count(budget), budget)  # type: ignore[misc]
    pool = [i for i, r in enumerate(routes) if r.is_self]
    size = min(want, len(pool))
    if size <= 0:
        return budget
    for i in ctx.rng.choice(pool, size=size, replace=False).tolist():
        routes[i] = oracle_route(Reason.AUDIT)
    return budget - size


def _defaults(groups: Sequence[GroupView], ctx: StepContext) -> list[Route]:
    return [ctx.default(g) for g in groups]  # type: ignore[misc]


def _online_prefix(group: GroupView, ctx: OnlineContext) -> tuple[Route, Route | None]:
    """(default route, audit or spot-check route if one applies): the checks every budgeted policy runs first."""
    default = ctx.default(group)
    if default.is_self and ctx.cfg.audit_share > 0.0 and ctx.admit("audit", group):
        return default, oracle_route(Reason.AUDIT)
    rate = ctx.cfg.spot_check_rate
    if group.is_unanimous and rate > 0.0 and ctx.rng.random() < rate and ctx.has_budget():
        return default, oracle_route(Reason.SPOT_CHECK)
    return default, None


# ------------------------------------------------------------------------------------------------ policies
@register_policy("coact")
class CoActPolicy:
    """Lowest agreement + k-NN distance within the self band + optional spot checks (see module docstring)."""

    uses_knn = True
    paces_by_value = False
    routes_unanimous = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        cfg = ctx.cfg
        routes = _defaults(groups, ctx)
        left = _audit(groups, routes, budget, ctx)
        left = _spot_checks(groups, routes, left, ctx)
        b_low, b_knn = split_budget(left, cfg.knn_share)
        open_ = [i for i, g in enumerate(groups) if not g.is_unanimous and not routes[i].is_oracle]
        for i in lowest_agreement(groups, open_, b_low):
            routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        band = [i for i in open_ if not routes[i].is_oracle and ctx.band(groups[i]) is Band.SELF]  # type: ignore[misc]
        knn = farthest(groups, band, ctx.knn_scores(groups, band), b_knn) if b_knn > 0 and band else []
        for i in knn:
            routes[i] = oracle_route(Reason.KNN)
        if len(knn) < b_knn:  # too few self-band groups: the rest of the k-NN share goes to low agreement
            rest = [i for i in open_ if not routes[i].is_oracle]
            for i in lowest_agreement(groups, rest, b_knn - len(knn)):
                routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        default, first = _online_prefix(group, ctx)
        if first is not None:
            return first
        if group.is_unanimous:
            return default
        if ctx.admit("low_agreement", group):
            return oracle_route(Reason.LOW_AGREEMENT)
        if ctx.band(group) is Band.SELF and ctx.admit("knn", group):
            return oracle_route(Reason.KNN)
        return default


@register_policy("adaptive")
class AdaptivePolicy:
    """Audit, then the budget split across branches by their measured yield (Thompson sampling).

    The branches are ``low_agreement`` (lowest-ρ non-unanimous groups), ``knn`` (self-band groups farthest
    from oracle-verified prompts; only once some prompt is verified) and ``spot_check`` (unanimous groups in
    random order). Each step the router gives every branch a share of the budget equal to the posterior
    probability that its yield (share of its labels that changed the training target) is the highest, with
    a small floor for exploration; labels a branch cannot place flow to the others.
    """

    uses_knn = True
    paces_by_value = False
    routes_unanimous = True

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        routes = _defaults(groups, ctx)
        left = _audit(groups, routes, budget, ctx)
        left = _spot_checks(groups, routes, left, ctx)
        if left <= 0:
            return routes
        open_ = [i for i, g in enumerate(groups) if not g.is_unanimous and not routes[i].is_oracle]
        band = [i for i in open_ if ctx.band(groups[i]) is Band.SELF]  # type: ignore[misc]
        scores = ctx.knn_scores(groups, band) if band else None
        unanimous = [i for i, g in enumerate(groups) if g.is_unanimous and not routes[i].is_oracle]
        ranked: dict[str, list[int]] = {"low_agreement": lowest_agreement(groups, open_, len(open_))}
        if scores is not None:
            ranked["knn"] = farthest(groups, band, scores, len(band))
        if unanimous:
            ranked["spot_check"] = [unanimous[j] for j in ctx.rng.permutation(len(unanimous))]
        ranked = {b: idx for b, idx in ranked.items() if idx}
        shares = ctx.shares(list(ranked))  # type: ignore[misc]
        quota = allocate(left, shares)
        reasons = {"low_agreement": Reason.LOW_AGREEMENT, "knn": Reason.KNN, "spot_check": Reason.SPOT_CHECK}
        pos = dict.fromkeys(ranked, 0)

        def take(branch: str) -> bool:
            idx = ranked[branch]
            while pos[branch] < len(idx) and routes[idx[pos[branch]]].is_oracle:
                pos[branch] += 1
            if pos[branch] >= len(idx):
                return False
            routes[idx[pos[branch]]] = oracle_route(reasons[branch])
            return True

        for branch in sorted(ranked, key=lambda b: -shares.get(b, 0.0)):
            for _ in range(quota.get(branch, 0)):
                if not take(branch):
                    break
                left -= 1
        for branch in sorted(ranked, key=lambda b: -shares.get(b, 0.0)):  # what a branch could not place
            while left > 0 and take(branch):
                left -= 1
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        default, first = _online_prefix(group, ctx)
        if first is not None:
            return first
        if group.is_unanimous:
            return oracle_route(Reason.SPOT_CHECK) if ctx.admit("spot_check", group) else default
        if ctx.admit("low_agreement", group):
            return oracle_route(Reason.LOW_AGREEMENT)
        if ctx.band(group) is Band.SELF and ctx.admit("knn", group):
            return oracle_route(Reason.KNN)
        return default


def allocate(budget: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``budget`` by ``shares`` (largest remainder; ties by name); the parts sum to ``budget``."""
    if budget <= 0 or not shares:
        return dict.fromkeys(shares, 0)
    total = sum(shares.values()) or 1.0
    exact = {b: budget * w / total for b, w in shares.items()}
    parts = {b: int(np.floor(v + 1e-9)) for b, v in exact.items()}
    rest = budget - sum(parts.values())
    for b in sorted(exact, key=lambda b: (-(exact[b] - parts[b]), b))[:rest]:
        parts[b] += 1
    return parts


@register_policy("lowest_agreement")
class LowestAgreementPolicy:
    """Spot checks, then the whole budget to the lowest-agreement groups (no k-NN)."""

    uses_knn = False
    paces_by_value = True
    routes_unanimous = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        routes = _defaults(groups, ctx)
        left = _audit(groups, routes, budget, ctx)
        left = _spot_checks(groups, routes, left, ctx)
        open_ = [i for i, g in enumerate(groups) if not g.is_unanimous and not routes[i].is_oracle]
        for i in lowest_agreement(groups, open_, left):
            routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        default, first = _online_prefix(group, ctx)
        if first is not None:
            return first
        if not group.is_unanimous and ctx.admit("low_agreement", group):
            return oracle_route(Reason.LOW_AGREEMENT)
        return default


@register_policy("random")
class RandomPolicy:
    """The budget goes to uniformly random groups; the rest are self-labelled or dropped by band."""

    uses_knn = False
    paces_by_value = False
    routes_unanimous = True

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        routes = _defaults(groups, ctx)
        size = min(max(budget, 0), len(groups))
        for i in sorted(ctx.rng.choice(len(groups), size=size, replace=False).tolist()) if size else []:
            routes[i] = oracle_route(Reason.RANDOM)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        if ctx.admit("random", group):
            return oracle_route(Reason.RANDOM)
        return ctx.default(group)


@register_policy("self_only")
class SelfOnlyPolicy:
    """Never ask the oracle: self-label by band, drop the rest (TTRL-like)."""

    uses_knn = False
    paces_by_value = False
    routes_unanimous = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        return _defaults(groups, ctx)

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        return ctx.default(group)


@register_policy("gold_all")
class GoldAllPolicy:
    """Every group to the oracle, whatever the budget (the full-label baseline)."""

    uses_knn = False
    paces_by_value = False
    routes_unanimous = True

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        return [oracle_route(Reason.ALL) for _ in groups]

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        return oracle_route(Reason.ALL)
