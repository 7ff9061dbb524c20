"""Routing policies: which groups go to the oracle, for a whole step or one group at a time.

Policies are looked up by name in :data:`POLICIES` (``RouterConfig.policy``); :func:`register_policy` adds one.

**Step mode** (``route_step``: all of a step's groups at once, deterministic, ties broken by group index):

* ``coact``: (1) spot checks: each unanimous group is audited with probability ``spot_check_rate`` while
  budget remains; (2) the remaining budget B is split into B_knn = ⌊knn_share·B⌋ and B_low = B − B_knn;
  (3) the B_low non-unanimous groups with the lowest ρ go to the oracle (``low_agreement``; this can reach
  into the self band when few groups are below τ_self); (4) B_knn of the remaining self-band groups with the
  largest k-NN distance to oracle-verified prompts go to the oracle (``knn``). Groups without an embedding
  rank after embedded ones; before anything is verified the k-NN share falls back to the lowest-ρ members
  of the self band (CoAct's iteration 0), and a k-NN share the self band cannot fill goes to the next
  lowest-ρ groups. Everything else keeps its band default (SELF or DROP).
* ``lowest_agreement``: spot checks, then the whole budget to the lowest-ρ non-unanimous groups.
* ``random``: the budget goes to uniformly random groups (any band); the rest keep their band default.
* ``self_only``: never the oracle (TTRL-like). ``gold_all``: every group to the oracle, ignoring budgets.

**Online mode** (``route_online``: groups stream in one at a time). A pacing rule replaces sorting. The
router keeps windows of the last W agreements (all groups), of the last W agreements and k-NN distances of
self-band groups, and of the band of the last W groups. With s = ``oracle_share_per_step``:

* a group goes to the oracle for ``low_agreement`` when its ρ lies in the lowest s·(1 − knn_share) of the ρ
  window (the window includes the group itself), see :func:`admit_lowest`;
* a self-band group goes to the oracle for ``knn`` when its distance lies in the highest
  s·knn_share / f_self of the distance window, where f_self is the self-band share of recent groups (so the
  k-NN branch also spends about s·knn_share of all groups); with no verified prompt yet it uses the lowest
  ρ of the self-band window instead;
* both only while the per-step budget (⌊s·n⌋ with carry when the step size n is announced, else ⌈s·seen⌉)
  and the total budget remain. Ties in the windows (ρ takes few values) are broken at random so that the
  expected admitted share equals the target share exactly. The first groups of a run are judged against a
  short window (the very first one alone, so it is admitted with probability equal to the share); the
  window fills after W groups and then tracks drift in ρ and in the distances as the policy changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

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


@dataclass
class StepContext:
    """What a policy needs besides the groups in step mode."""

    cfg: RouterConfig
    rng: np.random.Generator
    knn_scores: KnnScorer


class OnlineContext(Protocol):
    """Pacing state a policy queries in online mode (implemented by :class:`~coact_verl.router.router.Router`)."""

    cfg: RouterConfig
    rng: np.random.Generator

    def has_budget(self) -> bool:
        """Whether the per-step and total oracle budgets both have room for one more group."""
        ...

    def admit_low_agreement(self, group: GroupView, share: float) -> bool:
        """Whether ρ lies in the lowest ``share`` of the recent agreements of all groups."""
        ...

    def admit_far(self, group: GroupView, share: float) -> bool:
        """Whether a self-band group is among the farthest ``share`` (of all groups) from verified prompts."""
        ...


class RoutingPolicy(Protocol):
    """A named routing rule with a step mode and an online mode."""

    uses_knn: bool

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
    """The ``k`` candidate indices with the lowest agreement (ties: lower index first)."""
    return sorted(candidates, key=lambda i: (groups[i].agreement, i))[: max(k, 0)]


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


def _spot_checks(groups: Sequence[GroupView], routes: list[Route], budget: int, ctx: StepContext) -> int:
    """Send unanimous groups to the oracle with probability ``spot_check_rate``; returns the budget left."""
    rate = ctx.cfg.spot_check_rate
    unanimous = [i for i, g in enumerate(groups) if g.is_unanimous]
    if rate <= 0.0 or not unanimous:
        return budget
    draws = ctx.rng.random(len(unanimous))
    for i, u in zip(unanimous, draws, strict=True):
        if budget > 0 and u < rate:
            routes[i] = oracle_route(Reason.SPOT_CHECK)
            budget -= 1
    return budget


def _defaults(groups: Sequence[GroupView], cfg: RouterConfig) -> list[Route]:
    return [default_route(g, cfg.self_label_threshold, cfg.self_label_unanimous) for g in groups]


def _spot_check_online(group: GroupView, ctx: OnlineContext) -> Route | None:
    rate = ctx.cfg.spot_check_rate
    if group.is_unanimous and rate > 0.0 and ctx.rng.random() < rate and ctx.has_budget():
        return oracle_route(Reason.SPOT_CHECK)
    return None


# ------------------------------------------------------------------------------------------------ policies
@register_policy("coact")
class CoActPolicy:
    """Lowest agreement + k-NN distance within the self band + optional spot checks (see module docstring)."""

    uses_knn = True

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        cfg = ctx.cfg
        routes = _defaults(groups, cfg)
        left = _spot_checks(groups, routes, budget, ctx)
        b_low, b_knn = split_budget(left, cfg.knn_share)
        open_ = [i for i, g in enumerate(groups) if not g.is_unanimous]
        for i in lowest_agreement(groups, open_, b_low):
            routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        tau = cfg.self_label_threshold
        band = [i for i in open_ if not routes[i].is_oracle and band_of(groups[i], tau) is Band.SELF]
        knn = farthest(groups, band, ctx.knn_scores(groups, band), b_knn) if b_knn > 0 and band else []
        for i in knn:
            routes[i] = oracle_route(Reason.KNN)
        if len(knn) < b_knn:  # too few self-band groups: the rest of the k-NN share goes to low agreement
            rest = [i for i in open_ if not routes[i].is_oracle]
            for i in lowest_agreement(groups, rest, b_knn - len(knn)):
                routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        cfg = ctx.cfg
        default = default_route(group, cfg.self_label_threshold, cfg.self_label_unanimous)
        if group.is_unanimous:
            return _spot_check_online(group, ctx) or default
        if not ctx.has_budget():
            return default
        share = cfg.oracle_share_per_step
        if ctx.admit_low_agreement(group, share * (1.0 - cfg.knn_share)):
            return oracle_route(Reason.LOW_AGREEMENT)
        if band_of(group, cfg.self_label_threshold) is Band.SELF and ctx.admit_far(group, share * cfg.knn_share):
            return oracle_route(Reason.KNN)
        return default


@register_policy("lowest_agreement")
class LowestAgreementPolicy:
    """Spot checks, then the whole budget to the lowest-agreement groups (no k-NN)."""

    uses_knn = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        routes = _defaults(groups, ctx.cfg)
        left = _spot_checks(groups, routes, budget, ctx)
        open_ = [i for i, g in enumerate(groups) if not g.is_unanimous]
        for i in lowest_agreement(groups, open_, left):
            routes[i] = oracle_route(Reason.LOW_AGREEMENT)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        cfg = ctx.cfg
        default = default_route(group, cfg.self_label_threshold, cfg.self_label_unanimous)
        if group.is_unanimous:
            return _spot_check_online(group, ctx) or default
        if ctx.has_budget() and ctx.admit_low_agreement(group, cfg.oracle_share_per_step):
            return oracle_route(Reason.LOW_AGREEMENT)
        return default


@register_policy("random")
class RandomPolicy:
    """The budget goes to uniformly random groups; the rest are self-labelled or dropped by band."""

    uses_knn = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        routes = _defaults(groups, ctx.cfg)
        size = min(max(budget, 0), len(groups))
        for i in sorted(ctx.rng.choice(len(groups), size=size, replace=False).tolist()) if size else []:
            routes[i] = oracle_route(Reason.RANDOM)
        return routes

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        cfg = ctx.cfg
        if ctx.rng.random() < cfg.oracle_share_per_step and ctx.has_budget():
            return oracle_route(Reason.RANDOM)
        return default_route(group, cfg.self_label_threshold, cfg.self_label_unanimous)


@register_policy("self_only")
class SelfOnlyPolicy:
    """Never ask the oracle: self-label by band, drop the rest (TTRL-like)."""

    uses_knn = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        return _defaults(groups, ctx.cfg)

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        return default_route(group, ctx.cfg.self_label_threshold, ctx.cfg.self_label_unanimous)


@register_policy("gold_all")
class GoldAllPolicy:
    """Every group to the oracle, whatever the budget (the full-label baseline)."""

    uses_knn = False

    def route_step(self, groups: Sequence[GroupView], budget: int, ctx: StepContext) -> list[Route]:
        return [oracle_route(Reason.ALL) for _ in groups]

    def route_online(self, group: GroupView, ctx: OnlineContext) -> Route:
        return oracle_route(Reason.ALL)
