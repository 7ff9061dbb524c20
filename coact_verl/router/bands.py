"""Routing vocabulary: group views, agreement bands, routes and per-step budgets.

A *group* is the n responses sampled for one prompt. Its agreement ρ is the share of responses in the
largest answer cluster (a float in [0, 1]). With τ_self = ``RouterConfig.self_label_threshold``:

================  ==========================  ==============================================
band              condition                   default route (no oracle involved)
================  ==========================  ==============================================
``UNANIMOUS``     one answer cluster          SELF if ``self_label_unanimous`` else DROP
``SELF``          τ_self ≤ ρ, not unanimous   SELF (the majority answer is the label)
``LOW``           ρ < τ_self                  DROP
================  ==========================  ==============================================

The selection policies in :mod:`coact_verl.router.select` then move some groups to the oracle. Budgets here
are advisory: the oracle service enforces the hard limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

_EPS = 1e-12


class Action(str, Enum):
    """What happens to a group."""

    SELF = "self"
    ORACLE = "oracle"
    DROP = "drop"


class Reason(str, Enum):
    """Why a group got its action (logged as ``oracle_frac/<reason>`` and friends)."""

    MAJORITY = "majority"  # SELF: the majority answer is trusted
    LOW_AGREEMENT = "low_agreement"  # ORACLE: among the least-consistent groups
    KNN = "knn"  # ORACLE: self-label band, far from oracle-verified prompts
    SPOT_CHECK = "spot_check"  # ORACLE: random audit of a unanimous group
    AUDIT = "audit"  # ORACLE: uniformly random self-labelled group, to estimate self-label precision
    RANDOM = "random"  # ORACLE: the random baseline policy
    ALL = "all"  # ORACLE: the full-label baseline
    BELOW_THRESHOLD = "below_threshold"  # DROP: ρ < τ_self and not queried
    UNANIMOUS = "unanimous"  # DROP: unanimous groups are not self-labelled


ORACLE_REASONS = (Reason.LOW_AGREEMENT, Reason.KNN, Reason.SPOT_CHECK, Reason.AUDIT, Reason.RANDOM, Reason.ALL)


@dataclass(frozen=True)
class Route:
    """The routing decision for one group."""

    action: Action
    reason: Reason

    @property
    def is_self(self) -> bool:
        return self.action is Action.SELF

    @property
    def is_oracle(self) -> bool:
        return self.action is Action.ORACLE

    @property
    def is_drop(self) -> bool:
        return self.action is Action.DROP


SELF_MAJORITY = Route(Action.SELF, Reason.MAJORITY)
DROP_LOW = Route(Action.DROP, Reason.BELOW_THRESHOLD)
DROP_UNANIMOUS = Route(Action.DROP, Reason.UNANIMOUS)


def oracle_route(reason: Reason) -> Route:
    """An ORACLE route; ``reason`` must be one of :data:`ORACLE_REASONS`."""
    if reason not in ORACLE_REASONS:
        raise ValueError(f"{reason} is not an oracle reason")
    return Route(Action.ORACLE, reason)


class Band(str, Enum):
    """Agreement band of a group (see the module docstring)."""

    LOW = "low"
    SELF = "self"
    UNANIMOUS = "unanimous"


@dataclass(frozen=True, eq=False)  # compared by identity: the embedding is an array
class GroupView:
    """What the router sees of one group.

    Args:
        agreement: ρ, majority cluster size / n, in [0, 1].
        unanimous: whether all responses share one answer cluster; ``None`` infers it from ``agreement >= 1``.
        embedding: optional prompt embedding, shape ``(d,)``, L2-normalised (for the k-NN branch).
        prompt_id: optional identifier, carried through for the caller's bookkeeping.
        task: optional answer format (``gsm8k``, ``math``, ...), for the per-task calibration of τ_self.
        runner_up: optional share of responses in the second-largest answer cluster (0 when there is none);
            among groups of equal agreement, a closer contest (larger runner-up) is queried first.
    """

    agreement: float
    unanimous: bool | None = None
    embedding: np.ndarray | None = None
    prompt_id: str | None = None
    task: str | None = None
    runner_up: float | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.agreement <= 1.0) or math.isnan(self.agreement):
            raise ValueError(f"agreement must lie in [0, 1], got {self.agreement}")
        if self.embedding is not None and np.asarray(self.embedding).ndim != 1:
            raise ValueError("embedding must be a 1-D vector of shape (d,)")

    @property
    def is_unanimous(self) -> bool:
        return bool(self.unanimous) if self.unanimous is not None else self.agreement >= 1.0 - _EPS


def band_of(group: GroupView, self_label_threshold: float) -> Band:
    """The agreement band of ``group`` for τ_self = ``self_label_threshold``."""
    if group.is_unanimous:
        return Band.UNANIMOUS
    if group.agreement >= self_label_threshold - _EPS:
        return Band.SELF
    return Band.LOW


def default_route(group: GroupView, self_label_threshold: float, self_label_unanimous: bool) -> Route:
    """The route of a group that the oracle does not see: SELF or DROP by band."""
    band = band_of(group, self_label_threshold)
    if band is Band.SELF:
        return SELF_MAJORITY
    if band is Band.UNANIMOUS:
        return SELF_MAJORITY if self_label_unanimous else DROP_UNANIMOUS
    return DROP_LOW


def budget_for_step(n_groups: int, share: float, carry: float = 0.0) -> tuple[int, float]:
    """Per-step oracle budget ⌊share·n_groups + carry⌋ and the fractional remainder to carry over.

    Carrying the remainder makes the long-run spend equal ``share`` exactly even when ``share·n_groups`` is
    not an integer (e.g. 8 groups at 0.2 give budgets 1, 2, 1, 2, 2, ... instead of always 1).

    Returns:
        ``(budget, new_carry)`` with ``budget`` in ``[0, n_groups]`` and ``new_carry`` in ``[0, 1)``.
    """
    if n_groups < 0:
        raise ValueError("n_groups must be >= 0")
    exact = share * n_groups + carry
    budget = min(n_groups, int(math.floor(exact + 1e-9)))
    if budget == n_groups:  # everything is queried: nothing left to carry
        return budget, 0.0
    return budget, min(max(exact - budget, 0.0), 1.0 - 1e-9)


def split_budget(budget: int, knn_share: float) -> tuple[int, int]:
    """Split a step budget into (low-agreement, k-NN) parts; the k-NN part is ⌊knn_share·budget⌋."""
    if budget < 0:
        raise ValueError("budget must be >= 0")
    knn = int(math.floor(knn_share * budget + 1e-9))
    return budget - knn, knn
