"""The stateful router: verified-prompt reference set, pacing, budget counters, what it learns, checkpoints.

:class:`Router` wraps a policy from :data:`~coact_verl.router.select.POLICIES` and owns everything that lives
across steps:

* the FIFO-bounded set of embeddings of prompts whose majority answer the oracle confirmed (the k-NN
  reference; ``reference_rule=any_correct`` keeps the older "any answer confirmed" rule);
* online pacing: per acquisition branch, a window of the scores of the groups that branch may route (only
  those: a unanimous group never enters the agreement window, a low-band group never the distance window)
  and a quota of the step budget; each group is admitted when its score lies in the best q of its branch's
  window, with q = (quota left) / (expected candidates left in the step), so the quota is used up by the
  end of the step instead of being paced at a fixed rate that a step cap then truncates;
* what it learns from oracle labels (:meth:`observe`): branch yields (:class:`~coact_verl.router.learning.BranchYield`),
  P(majority correct | agreement level) (:class:`~coact_verl.router.learning.Calibration`) and the self-label
  audit (:class:`~coact_verl.router.learning.Audit`) with its collapse guard;
* the budget carry, a seeded RNG and metric counters.

Its budget accounting is advisory; the oracle service enforces the hard budget. ``state_dict()`` holds only
plain Python values and numpy arrays, so one instance can live in a single process (e.g. a Ray actor) and
be checkpointed with the trainer.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coact_verl import metric_keys as keys
from coact_verl.config import RouterConfig
from coact_verl.router.bands import (
    ORACLE_REASONS,
    Action,
    Band,
    GroupView,
    Reason,
    Route,
    budget_for_step,
)
from coact_verl.router.embedding import knn_distance
from coact_verl.router.learning import BRANCHES, Audit, BranchYield, Calibration, changed_target
from coact_verl.router.select import (
    StepContext,
    admit_highest,
    admit_lowest,
    get_policy,
    shortfall_chance,
    stopping_values,
    take_now,
)

logger = logging.getLogger(__name__)

_EPS = 1e-9
_PACING_SLACK = 0.2
_MIN_VALUE_WINDOW = 32  # agreements seen before the lowest_agreement policy paces by optimal stopping
_SHORTFALL_RISK = 0.001  # online pacing holds a label back only while P(it ends the step unspent) is below this
PACED = ("low_agreement", "knn", "spot_check", "audit", "random")
_REASON_OF = {
    "low_agreement": Reason.LOW_AGREEMENT,
    "knn": Reason.KNN,
    "spot_check": Reason.SPOT_CHECK,
    "audit": Reason.AUDIT,
    "random": Reason.RANDOM,
}
_SELF = Route(Action.SELF, Reason.MAJORITY)
_DROP_LOW = Route(Action.DROP, Reason.BELOW_THRESHOLD)
_DROP_UNANIMOUS = Route(Action.DROP, Reason.UNANIMOUS)


def _low_key(group: GroupView) -> float:
    """Online rank of a group in the low-agreement window: ρ, ties broken by a larger runner-up share."""
    return group.agreement - 1e-3 * (group.runner_up or 0.0)


class Router:
    """Routes groups to SELF / ORACLE / DROP with the configured policy.

    Args:
        cfg: router settings (policy, thresholds, shares, k, seed, reference size, window, calibration, audit).
        budget_total: labels the run may spend in total (advisory mirror of the service's budget); ``None`` = unbounded.
    """

    def __init__(self, cfg: RouterConfig | None = None, budget_total: int | None = None) -> None:
        self.cfg = cfg or RouterConfig()
        self.policy = get_policy(self.cfg.policy)
        self.budget_total = budget_total
        self.rng = np.random.default_rng(self.cfg.seed)
        window = self.cfg.online_window
        self._reference: deque[np.ndarray] = deque(maxlen=self.cfg.knn_max_reference)
        self._reference_array: np.ndarray | None = None  # stacked copy, rebuilt after each change
        self._reference_sq = np.zeros(0, np.float32)  # squared norms of the reference rows (k-NN distance)
        self._rho: deque[float] = deque(maxlen=window)  # ρ of recent non-unanimous groups
        self._self_rho: deque[float] = deque(maxlen=window)  # ρ of recent self-band groups
        self._dist: deque[float] = deque(maxlen=window)  # k-NN distance of recent self-band groups
        self._dist_emb: deque[np.ndarray] = deque(maxlen=window)  # their embeddings (to refresh the distances)
        self._dist_ref_size = 0  # reference size the distances in the window were computed against
        # per recent group: a candidate of each branch? ("routable": of any branch with quota in its step)
        self._flags: dict[str, deque[bool]] = {b: deque(maxlen=window) for b in (*PACED, "routable")}
        self._carry = 0.0
        self._audit_carry = 0.0
        self._used_total = 0
        self._step_cap: int | None = None
        self._step_n: int | None = None  # announced (or learned) number of groups in the step
        self._step_budget: float | None = None
        self._quota: dict[str, float] = {}
        self._used_by: Counter[str] = Counter()
        self._prev_seen: int | None = None
        self._step_seen = 0
        self._step_used = 0
        self._last_dist: float | None = None
        self._remaining: int | None = None
        self._value_table: np.ndarray | None = None  # optimal-stopping table of the step (lowest_agreement)
        self._counts: Counter[str] = Counter()
        self._shares: dict[str, float] = {}
        self.yields = BranchYield(self.cfg.bandit_discount)
        self.calibration = Calibration(self.cfg.calibration_min_labels)
        self.audit = Audit(self.cfg.audit_window)
        self._tau_guard = 0.0  # the collapse guard's raised τ_self (> 1: self-labelling stopped)
        self._guard_events = 0

    # ------------------------------------------------------------------------------------------ self-labels
    @property
    def tau_self(self) -> float:
        """The τ_self in force: the configured one, or higher after the collapse guard acted (> 1: none)."""
        return max(self.cfg.self_label_threshold, self._tau_guard)

    def self_labels(self, group: GroupView) -> bool:
        """Whether the majority answer of ``group`` would be its label (the oracle not involved)."""
        return self._self_labels_level(group.agreement, group.task, group.is_unanimous)

    def _self_labels_level(self, agreement: float, task: str | None, unanimous: bool) -> bool:
        if agreement < self._tau_guard - _EPS:
            return False
        if unanimous and not self.cfg.self_label_unanimous:
            return False
        if self.cfg.self_label_precision is not None:
            trusted = self.calibration.trusted(task, agreement, self.cfg.self_label_precision)
            if trusted is not None:
                return trusted
        return unanimous or agreement >= self.cfg.self_label_threshold - _EPS

    def band(self, group: GroupView) -> Band:
        """UNANIMOUS, SELF (self-labelled under the current rule) or LOW."""
        if group.is_unanimous:
            return Band.UNANIMOUS
        return Band.SELF if self.self_labels(group) else Band.LOW

    def default(self, group: GroupView) -> Route:
        """The route of a group the oracle does not see."""
        if self.self_labels(group):
            return _SELF
        return _DROP_UNANIMOUS if group.is_unanimous else _DROP_LOW

    # ------------------------------------------------------------------------------------ reference set
    @property
    def reference_size(self) -> int:
        """Number of verified prompt embeddings currently kept."""
        return len(self._reference)

    def add_verified(self, embeddings: np.ndarray) -> None:
        """Add embeddings (``(d,)`` or ``(B, d)``) of prompts the oracle verified correct; the oldest fall out."""
        arr = np.asarray(embeddings, dtype=np.float32)
        rows = arr[None, :] if arr.ndim == 1 else arr
        if rows.ndim != 2:
            raise ValueError(f"expected an embedding (d,) or (B, d), got shape {arr.shape}")
        if self._reference and rows.shape[1] != self._reference[0].shape[0]:
            raise ValueError(f"embedding dim {rows.shape[1]} != reference dim {self._reference[0].shape[0]}")
        self._reference.extend(row.copy() for row in rows)
        self._reference_array = None

    def _reference_matrix(self) -> np.ndarray:
        if self._reference_array is None:
            self._reference_array = np.stack(self._reference)
            self._reference_sq = np.einsum("nd,nd->n", self._reference_array, self._reference_array)
        return self._reference_array

    def knn_distances(self, embeddings: np.ndarray) -> np.ndarray | None:
        """k-NN distance (k = ``knn_k`` clamped to the reference size) of ``(B, d)`` embeddings; ``None`` if empty."""
        if not self._reference:
            return None
        return self._knn_distances_nonempty(embeddings)

    def _knn_distances_nonempty(self, embeddings: np.ndarray) -> NDArray[np.float64]:
        """:meth:`knn_distances` for a non-empty reference set, shape ``(B,)``."""
        return knn_distance(
            np.asarray(embeddings, dtype=np.float32),
            self._reference_matrix(),
            self.cfg.knn_k,
            reference_sq=self._reference_sq,
            dtype=np.float32,
        )

    def _knn_scores(self, groups: Sequence[GroupView], indices: Sequence[int]) -> np.ndarray | None:
        if not self._reference:
            return None
        scores = np.full(len(indices), np.nan)
        have = [pos for pos, i in enumerate(indices) if groups[i].embedding is not None]
        if have:
            emb = np.stack([np.asarray(groups[indices[pos]].embedding) for pos in have])
            scores[have] = self.knn_distances(emb)
        return scores

    # ------------------------------------------------------------------------------------ oracle feedback
    def observe(
        self,
        group: GroupView,
        route: Route | Reason | str,
        majority_correct: bool | None,
        any_correct: bool | None = None,
        task: str | None = None,
    ) -> bool | None:
        """Learn from one oracle label of a group this router sent to the oracle.

        Args:
            group: the group as it was routed.
            route: its route (or oracle reason): which branch spent the label.
            majority_correct: whether the oracle confirmed the majority answer (``None``: unknown).
            any_correct: whether some response is right (``None``: same as ``majority_correct``).
            task: answer format for the per-task calibration (defaults to ``group.task``).

        Returns:
            Whether the label changed the training target (``None`` when ``majority_correct`` is unknown).
        """
        reason = route.reason if isinstance(route, Route) else Reason(route)
        if majority_correct is None:
            return None
        any_ok = bool(majority_correct) if any_correct is None else bool(any_correct) or bool(majority_correct)
        task = task or group.task
        changed = changed_target(self.self_labels(group), bool(majority_correct), any_ok)
        if reason.value in BRANCHES:
            self.yields.update(reason.value, changed)
        self._counts[f"changed/{reason.value}"] += int(changed)
        self._counts[f"labeled/{reason.value}"] += 1
        self.calibration.update(task or "all", group.agreement, bool(majority_correct))
        if reason is Reason.AUDIT:
            self.audit.update(group.agreement, task, bool(majority_correct))
        verified = majority_correct if self.cfg.reference_rule == "majority_correct" else any_ok
        if verified and group.embedding is not None:
            self.add_verified(np.asarray(group.embedding))
        return changed

    def _audit_keep(self, agreement: float, task: str) -> bool:
        return self._self_labels_level(agreement, task or None, agreement >= 1.0 - _EPS)

    def audit_estimate(self) -> tuple[float, float, float, int]:
        """(precision, 95% low, 95% high, n) of the self-labels in force, from the audited groups."""
        return self.audit.estimate(self._audit_keep)

    def _collapse_guard(self) -> None:
        """Raise τ_self one agreement level (or stop self-labelling) when the audit interval is below target."""
        if self.cfg.audit_share <= 0.0 or self._tau_guard > 1.0:
            return
        _, _, high, n = self.audit_estimate()
        if n == 0 or high >= self.cfg.audit_target:
            return
        tau = self.tau_self
        above = sorted({rho for rho, _, _ in self.audit.outcomes if rho > tau + _EPS})
        self._tau_guard = above[0] if above else 1.0 + 1e-6
        self._guard_events += 1
        what = f"raised tau_self to {self._tau_guard:.4f}" if above else "stopped self-labelling"
        logger.warning(
            "coact router collapse guard: audited self-label precision interval upper end %.3f < target %.3f "
            "(n=%d); %s",
            high,
            self.cfg.audit_target,
            n,
            what,
        )

    def _start_step(self) -> None:
        self._collapse_guard()
        self.yields.decay()
        self._shares = {}
        self._value_table = None

    def branch_shares(self, branches: Sequence[str]) -> dict[str, float]:
        """The step's split of the non-audit budget across ``branches`` for the ``adaptive`` policy.

        Thompson sampling in probability-matching form: each branch's share is the posterior probability that
        its yield is the highest, floored at 2% for exploration and renormalised.
        """
        branches = list(branches)
        if not branches:
            return {}
        shares = self.yields.thompson_shares(branches, self.rng)
        floor = 0.02 if len(branches) > 1 else 0.0
        shares = {b: max(w, floor) for b, w in shares.items()}
        total = sum(shares.values())
        self._shares = {b: w / total for b, w in shares.items()}
        return self._shares

    def audit_count(self, budget: int) -> int:
        """Audit labels out of a step budget: ⌊audit_share · budget + carry⌋ (the remainder carries over)."""
        if self.cfg.audit_share <= 0.0 or budget <= 0:
            return 0
        count, self._audit_carry = budget_for_step(budget, self.cfg.audit_share, self._audit_carry)
        return count

    # ----------------------------------------------------------------------------------------- step mode
    def step_budget(self, n_groups: int) -> int:
        """⌊oracle_share_per_step · n_groups + carry⌋, capped by the total budget left; updates the carry."""
        budget, self._carry = budget_for_step(n_groups, self.cfg.oracle_share_per_step, self._carry)
        if self.budget_total is not None:
            budget = min(budget, max(self.budget_total - self._used_total, 0))
        return budget

    def route_step(self, groups: Sequence[GroupView], budget: int | None = None) -> list[Route]:
        """Route a whole step's groups; ``budget`` defaults to :meth:`step_budget` of ``len(groups)``."""
        self._start_step()
        if budget is None:
            budget = self.step_budget(len(groups))
        ctx = StepContext(
            cfg=self.cfg,
            rng=self.rng,
            knn_scores=self._knn_scores,
            band=self.band,
            default=self.default,
            shares=self.branch_shares,
            audit_count=self.audit_count,
        )
        routes = self.policy.route_step(groups, max(int(budget), 0), ctx)
        for group, route in zip(groups, routes, strict=True):
            self._record(route, group)
        return routes

    # --------------------------------------------------------------------------------------- online mode
    def begin_step(self, n_groups: int | None = None) -> None:
        """Start a step of online routing.

        With ``n_groups`` known the step cap is :meth:`step_budget`. Otherwise one more label is allowed while
        the labels used in the step are below share · groups seen + carry, where the carry (within ±1) is
        what the previous unannounced step left or overdrew: the spend stays within one label of share ·
        groups seen over the whole run and never more than one label ahead within a step. The pacing then
        expects as many groups as the previous step had (in the first such step it paces at the share's rate,
        admitting up to twice as readily while behind it).
        """
        if self._step_seen > 0:
            self._prev_seen = self._step_seen
            if self._step_cap is None:  # an unannounced step ended: carry what it left (or overdrew), within ±1
                left = self.cfg.oracle_share_per_step * self._step_seen + self._carry - self._step_used
                self._carry = min(max(left, -1.0), 1.0)
        self._start_step()
        self._step_seen = 0
        self._step_used = 0
        self._used_by = Counter()
        if n_groups is None:
            self._step_cap = None
            self._step_n = self._prev_seen
            self._step_budget = None if self._step_n is None else self.cfg.oracle_share_per_step * self._step_n
        else:
            self._step_cap = self.step_budget(n_groups)
            self._step_n = n_groups
            self._step_budget = float(self._step_cap)
        self._set_quotas()

    def _set_quotas(self) -> None:
        """Split the step budget (or, when the step size is unknown, the share s) across the paced branches."""
        total = self._step_budget if self._step_budget is not None else self.cfg.oracle_share_per_step
        audit = self.cfg.audit_share * total
        rest = total - audit
        name = self.cfg.policy
        if name == "coact":
            shares = {"low_agreement": 1.0 - self.cfg.knn_share, "knn": self.cfg.knn_share}
        elif name == "adaptive":
            branches = ["low_agreement"]
            if self._reference:
                branches.append("knn")
            if any(self._flags["spot_check"]):
                branches.append("spot_check")
            shares = self.branch_shares(branches)
        elif name == "random":
            shares = {"random": 1.0}
        else:
            shares = {"low_agreement": 1.0}
        self._quota = {b: rest * w for b, w in shares.items()}
        self._quota["audit"] = audit

    def route_online(self, group: GroupView, remaining: int | None = None) -> Route:
        """Route one streamed group with the quota pacing rule (see the module docstring).

        Args:
            group: the group to route.
            remaining: labels the oracle service reports as left in the total budget, if known.
        """
        if not self._quota:
            self._set_quotas()
        self._step_seen += 1
        self._remaining = remaining
        band = self.band(group)
        is_self = self.self_labels(group)
        self._last_dist = None
        if band is Band.SELF and self.policy.uses_knn and self._reference and group.embedding is not None:
            self._last_dist = float(self._knn_distances_nonempty(np.asarray(group.embedding)[None, :])[0])
        flags = {
            "low_agreement": not group.is_unanimous,
            "knn": band is Band.SELF,
            "spot_check": group.is_unanimous,
            "audit": is_self,
            "random": True,
        }
        flags["routable"] = any(flag and self._quota.get(b, 0.0) > _EPS for b, flag in flags.items())
        for branch, flag in flags.items():
            self._flags[branch].append(flag)
        if not group.is_unanimous:
            self._rho.append(_low_key(group))
        if band is Band.SELF:
            self._self_rho.append(group.agreement)
            if self._last_dist is not None:
                self._refresh_distances()
                self._dist.append(self._last_dist)
                self._dist_emb.append(np.asarray(group.embedding, dtype=np.float32))
        route = self.policy.route_online(group, self)
        if route.is_oracle:
            self._step_used += 1
            self._used_by[route.reason.value] += 1
        self._record(route, group)
        return route

    def _refresh_distances(self) -> None:
        """Recompute the distance window once the reference set has grown by an eighth (or 32 prompts) since:
        distances shrink as verified prompts accumulate, and a stale window would stop admitting far groups."""
        size = len(self._reference)
        if not self._dist_emb or size - self._dist_ref_size < max(32, self._dist_ref_size // 8):
            if not self._dist_emb:
                self._dist_ref_size = size
            return
        fresh = self._knn_distances_nonempty(np.stack(self._dist_emb))  # size >= 32 here: never empty
        self._dist.clear()
        self._dist.extend(float(d) for d in fresh)
        self._dist_ref_size = size

    def has_budget(self) -> bool:
        """Whether the per-step cap and the total budget (own count and the service's ``remaining``) allow one more."""
        cap = self._step_cap
        if cap is None:  # step size unknown: a token bucket, at most one label ahead of share · groups seen
            if self._step_used >= self.cfg.oracle_share_per_step * self._step_seen + self._carry - 1e-9:
                return False
        elif self._step_used >= cap:
            return False
        if self.budget_total is not None and self._used_total >= self.budget_total:
            return False
        return self._remaining is None or self._remaining > 0

    def _candidate_share(self, branch: str) -> float:
        flags = self._flags[branch]
        return max(sum(flags) / len(flags) if flags else 1.0, 1.0 / max(len(flags), 1))

    def _admit_share(self, branch: str) -> float:
        """q: the share of ``branch``'s candidates to admit now so that its quota is spent by the step's end."""
        if self._step_n is None:  # step size unknown and no previous step: the quota is a rate (share of groups)
            rate = self._quota.get(branch, 0.0)
            behind = rate * self._step_seen - self._used_by[_REASON_OF[branch].value]  # labels behind that rate
            return rate / self._candidate_share(branch) * (1.0 + min(max(behind, 0.0), 1.0))
        left = self._quota_left(branch)
        if left <= _EPS:
            return 0.0
        return left / (1.0 + self._to_come() * self._candidate_share(branch))

    def _to_come(self) -> float:
        """Groups still expected in the step, discounted: arrivals are random, so the quantile pacing plans to
        finish a little early (the step cap stops any overshoot) rather than hold quota at the step's end."""
        return max((self._step_n or 0) - self._step_seen, 0) * (1.0 - _PACING_SLACK)

    def _quota_left(self, branch: str) -> float:
        """Labels ``branch`` may still place in the step: its own quota left plus what the other branches cannot
        place with the candidates still expected."""
        left = self._quota.get(branch, 0.0) - self._used_by[_REASON_OF[branch].value]
        to_come = self._to_come()
        for other, quota in self._quota.items():
            if other != branch:
                other_left = quota - self._used_by[_REASON_OF[other].value]
                left += max(other_left - to_come * self._candidate_share(other), 0.0)
        return left

    def _labels_left(self, branch: str) -> int:
        """Whole labels ``branch`` may still place in the step (its quota left, within the step cap)."""
        labels = int(np.ceil(self._quota_left(branch) - _EPS))
        if self._step_cap is not None:
            labels = min(labels, self._step_cap - self._step_used)
        return labels

    def _short_of_candidates(self) -> bool:
        """Whether holding the step's labels back risks leaving one unspent: the chance that fewer routable
        groups (candidates of a branch with quota) than labels left come in the rest of the step
        (:func:`~coact_verl.router.select.shortfall_chance`, at the window's rate by the rule of succession)
        exceeds ``_SHORTFALL_RISK``."""
        budget = self._step_cap if self._step_cap is not None else self._step_budget
        if self._step_n is None or budget is None:
            return False
        labels = int(np.ceil(budget - self._step_used - _EPS))
        routable = self._flags["routable"]
        rate = (sum(routable) + 1.0) / (len(routable) + 2.0)
        return shortfall_chance(rate, max(self._step_n - self._step_seen, 0), labels) > _SHORTFALL_RISK

    def admit(self, branch: str, group: GroupView) -> bool:
        """Quota pacing for ``branch`` (one of ``low_agreement``, ``knn``, ``spot_check``, ``audit``, ``random``)."""
        if not self.has_budget():
            return False
        if branch == "low_agreement" and self.policy.paces_by_value:
            decided = self._admit_by_value(group)
            if decided is not None:
                return decided
        q = self._admit_share(branch)
        if q <= 0.0:
            return False
        if q >= 1.0 - _EPS or self._short_of_candidates():
            return True
        if branch == "low_agreement":
            return admit_lowest(self._rho, _low_key(group), q, self.rng)
        if branch == "knn":
            if self._last_dist is None:  # nothing verified yet (or no embedding): lowest agreement in the band
                return admit_lowest(self._self_rho, group.agreement, q, self.rng)
            return admit_highest(self._dist, self._last_dist, q, self.rng)
        return bool(self.rng.random() < q)

    def _admit_by_value(self, group: GroupView) -> bool | None:
        """Optimal stopping for a single low-agreement branch (``None``: not enough known, use the quantile rule).

        A group is worth 1 − ρ (plus 10⁻³ of its runner-up share, the step-mode tie-break), a proxy for the
        chance that its majority is wrong. Coming groups are drawn from the agreement window (and the window's
        share of non-unanimous groups); the step's table (:func:`~coact_verl.router.select.stopping_values`)
        then says whether this group is worth more than keeping the label for the groups still to come. Unlike
        the quantile rule, it holds a label back when a better group is likely to come. A label is held only
        while the chance that too few candidates come to spend it (:func:`~coact_verl.router.select.
        shortfall_chance`) stays below ``_SHORTFALL_RISK``, so the step's budget is spent.
        """
        if self._step_n is None or len(self._rho) < _MIN_VALUE_WINDOW:
            return None
        labels = self._labels_left("low_agreement")
        if labels <= 0:
            return False
        groups_after = max(self._step_n - self._step_seen, 0)
        if self._value_table is None:
            keys, counts = np.unique(np.asarray(self._rho), return_counts=True)
            chances = counts / counts.sum() * self._candidate_share("low_agreement")
            self._value_table = stopping_values(chances, 1.0 - keys, groups_after + 1, labels)
        if take_now(self._value_table, 1.0 - _low_key(group), groups_after, labels):
            return True
        return self._short_of_candidates()

    def admit_low_agreement(self, group: GroupView, share: float) -> bool:
        """Pacing test on the window of recent agreements of non-unanimous groups (``share`` of all groups)."""
        within = min(share / self._candidate_share("low_agreement"), 1.0)
        return admit_lowest(self._rho, _low_key(group), within, self.rng)

    def admit_far(self, group: GroupView, share: float) -> bool:
        """Pacing test on the k-NN distance window, rescaled to the self band's share of recent groups."""
        within = min(share / self._candidate_share("knn"), 1.0)
        if self._last_dist is None:
            return admit_lowest(self._self_rho, group.agreement, within, self.rng)
        return admit_highest(self._dist, self._last_dist, within, self.rng)

    # ------------------------------------------------------------------------------------------- metrics
    def _record(self, route: Route, group: GroupView | None = None) -> None:
        self._counts[route.action.value] += 1
        self._counts[f"{route.action.value}/{route.reason.value}"] += 1
        if route.is_oracle:
            self._used_total += 1

    @property
    def oracle_used_total(self) -> int:
        """Groups routed to the oracle since the start (advisory: the service may refuse some)."""
        return self._used_total

    def calibration_curve(self) -> dict[str, float]:
        """Estimated P(majority correct | task, agreement level): ``{"<task>/<level>": p, "<task>/<level>/n": n}``."""
        return self.calibration.curve()

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Routing metrics since the last reset.

        ``coact/router/{self,oracle,drop}_frac``, ``coact/router/oracle_frac/<reason>``, ``coact/router/groups``,
        ``coact/router/oracle_used_total``, ``coact/router/reference_size``, ``coact/router/drop_frac/<reason>``,
        per branch ``coact/router/branch/<b>/{labels,changed,yield,share}``
        (labels and changed since the last reset; yield the posterior mean), ``coact/router/tau_self``, the
        calibration curve ``coact/router/calibration/<task>/<level>`` and, with an audit,
        ``coact/audit/{precision,ci_low,ci_high,n,guard_events,tau_self}``.
        """
        n = self._counts[Action.SELF.value] + self._counts[Action.ORACLE.value] + self._counts[Action.DROP.value]
        denom = max(n, 1)
        out = {keys.ROUTER_FRAC.format(action=a.value): self._counts[a.value] / denom for a in Action}
        for reason in ORACLE_REASONS:
            out[keys.ROUTER_ORACLE_REASON.format(reason=reason.value)] = self._counts[f"oracle/{reason.value}"] / denom
        out[keys.ROUTER_GROUPS] = float(n)
        out[keys.ROUTER_ORACLE_USED] = float(self._used_total)
        out[keys.ROUTER_REFERENCE_SIZE] = float(len(self._reference))
        for reason in (Reason.BELOW_THRESHOLD, Reason.UNANIMOUS):
            out[keys.ROUTER_DROP_REASON.format(reason=reason.value)] = self._counts[f"drop/{reason.value}"] / denom
        for branch in BRANCHES:
            out[keys.ROUTER_BRANCH.format(branch=branch, stat="labels")] = float(self._counts[f"labeled/{branch}"])
            out[keys.ROUTER_BRANCH.format(branch=branch, stat="changed")] = float(self._counts[f"changed/{branch}"])
            out[keys.ROUTER_BRANCH.format(branch=branch, stat="yield")] = self.yields.mean(branch)
            out[keys.ROUTER_BRANCH.format(branch=branch, stat="share")] = float(self._shares.get(branch, 0.0))
        out[keys.ROUTER_TAU_SELF] = float(self.tau_self)
        for point, value in self.calibration.curve().items():  # "<task>/<level>" and "<task>/<level>/n"
            task, level, *count = point.split("/")
            template = keys.ROUTER_CALIBRATION_N if count else keys.ROUTER_CALIBRATION
            out[template.format(task=task, level=level)] = value
        if self.cfg.audit_share > 0.0 or self.audit.outcomes:
            precision, low, high, n_audit = self.audit_estimate()
            audit = {"precision": precision, "ci_low": low, "ci_high": high, "n": float(n_audit)}
            audit.update({"guard_events": float(self._guard_events), "tau_self": float(self.tau_self)})
            out.update({keys.AUDIT.format(stat=stat): value for stat, value in audit.items()})
        if reset:
            self._counts.clear()
        return out

    # --------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: plain Python values and one ``(N, d)`` float32 array."""
        dim = self._reference[0].shape[0] if self._reference else 0
        return {
            "policy": self.cfg.policy,
            "reference": self._reference_matrix().copy() if self._reference else np.zeros((0, dim), np.float32),
            "rho_window": list(self._rho),
            "self_band_window": list(self._flags["knn"]),
            "self_rho_window": list(self._self_rho),
            "dist_window": list(self._dist),
            "dist_embeddings": np.stack(self._dist_emb) if self._dist_emb else np.zeros((0, dim), np.float32),
            "dist_reference_size": self._dist_ref_size,
            "flags": {b: list(f) for b, f in self._flags.items()},
            "carry": self._carry,
            "audit_carry": self._audit_carry,
            "used_total": self._used_total,
            "step": [self._step_cap, self._step_seen, self._step_used],
            "pacing": {
                "step_n": self._step_n,
                "step_budget": self._step_budget,
                "prev_seen": self._prev_seen,
                "quota": dict(self._quota),
                "used_by": dict(self._used_by),
                "shares": dict(self._shares),
            },
            "rng": self.rng.bit_generator.state,
            "counts": dict(self._counts),
            "yields": self.yields.state_dict(),
            "calibration": self.calibration.state_dict(),
            "audit": self.audit.state_dict(),
            "tau_guard": self._tau_guard,
            "guard_events": self._guard_events,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the configured policy may differ from the saved one; keys added
        after a checkpoint was written take their initial values)."""
        self._reference.clear()
        self._reference_array = None
        reference = np.asarray(state["reference"], dtype=np.float32)
        if reference.size:
            self.add_verified(reference)
        for window, key in (
            (self._rho, "rho_window"),
            (self._self_rho, "self_rho_window"),
            (self._dist, "dist_window"),
        ):
            window.clear()
            window.extend(state[key])
        self._dist_emb.clear()
        self._dist_emb.extend(np.asarray(row, dtype=np.float32) for row in state.get("dist_embeddings", []))
        if len(self._dist_emb) != len(self._dist):  # an older checkpoint: no embeddings to refresh from
            self._dist_emb.clear()
        self._dist_ref_size = int(state.get("dist_reference_size", len(self._reference)))
        flags = state.get("flags", {"knn": state.get("self_band_window", [])})
        for branch, flag_window in self._flags.items():
            flag_window.clear()
            flag_window.extend(bool(x) for x in flags.get(branch, []))
        self._carry = float(state["carry"])
        self._audit_carry = float(state.get("audit_carry", 0.0))
        self._used_total = int(state["used_total"])
        self._step_cap, self._step_seen, self._step_used = state["step"]
        pacing = state.get("pacing", {})
        self._step_n = pacing.get("step_n")
        self._step_budget = pacing.get("step_budget")
        self._prev_seen = pacing.get("prev_seen")
        self._quota = dict(pacing.get("quota", {}))
        self._used_by = Counter(pacing.get("used_by", {}))
        self._shares = dict(pacing.get("shares", {}))
        self.rng.bit_generator.state = state["rng"]
        self._counts = Counter(state["counts"])
        self.yields.load_state_dict(state.get("yields", {}))
        self.calibration.load_state_dict(state.get("calibration", {}))
        self.audit.load_state_dict(state.get("audit", []))
        self._tau_guard = float(state.get("tau_guard", 0.0))
        self._guard_events = int(state.get("guard_events", 0))
