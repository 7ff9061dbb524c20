"""The stateful router: verified-prompt reference set, pacing windows, budget counters, checkpoints.

:class:`Router` wraps a policy from :data:`~coact_verl.router.select.POLICIES` and owns everything that lives
across steps: the FIFO-bounded set of embeddings of prompts the oracle verified correct (the k-NN
reference), the online pacing windows, the budget carry, a seeded RNG and metric counters. Its budget
accounting is advisory; the oracle service enforces the hard budget. ``state_dict()`` holds only plain
Python values and numpy arrays.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from coact_verl.config import RouterConfig
from coact_verl.router.bands import (
    ORACLE_REASONS,
    Action,
    Band,
    GroupView,
    Route,
    band_of,
    budget_for_step,
)
from coact_verl.router.embedding import knn_distance
from coact_verl.router.select import StepContext, admit_highest, admit_lowest, get_policy


class Router:
    """Routes groups to SELF / ORACLE / DROP with the configured policy.

    Args:
        cfg: router settings (policy, thresholds, shares, k, seed, reference size, window).
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
        self._rho: deque[float] = deque(maxlen=window)
        self._is_self_band: deque[bool] = deque(maxlen=window)
        self._self_rho: deque[float] = deque(maxlen=window)
        self._dist: deque[float] = deque(maxlen=window)
        self._carry = 0.0
        self._used_total = 0
        self._step_cap: int | None = None
        self._step_seen = 0
        self._step_used = 0
        self._last_dist: float | None = None
        self._remaining: int | None = None
        self._counts: Counter[str] = Counter()

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
        return self._reference_array

    def knn_distances(self, embeddings: np.ndarray) -> np.ndarray | None:
        """k-NN distance (k = ``knn_k`` clamped to the reference size) of ``(B, d)`` embeddings; ``None`` if empty."""
        if not self._reference:
            return None
        return knn_distance(np.asarray(embeddings, dtype=np.float32), self._reference_matrix(), self.cfg.knn_k)

    def _knn_scores(self, groups: Sequence[GroupView], indices: Sequence[int]) -> np.ndarray | None:
        if not self._reference:
            return None
        scores = np.full(len(indices), np.nan)
        have = [pos for pos, i in enumerate(indices) if groups[i].embedding is not None]
        if have:
            emb = np.stack([np.asarray(groups[indices[pos]].embedding) for pos in have])
            scores[have] = self.knn_distances(emb)
        return scores

    # ----------------------------------------------------------------------------------------- step mode
    def step_budget(self, n_groups: int) -> int:
        """⌊oracle_share_per_step · n_groups + carry⌋, capped by the total budget left; updates the carry."""
        budget, self._carry = budget_for_step(n_groups, self.cfg.oracle_share_per_step, self._carry)
        if self.budget_total is not None:
            budget = min(budget, max(self.budget_total - self._used_total, 0))
        return budget

    def route_step(self, groups: Sequence[GroupView], budget: int | None = None) -> list[Route]:
        """Route a whole step's groups; ``budget`` defaults to :meth:`step_budget` of ``len(groups)``."""
        if budget is None:
            budget = self.step_budget(len(groups))
        ctx = StepContext(cfg=self.cfg, rng=self.rng, knn_scores=self._knn_scores)
        routes = self.policy.route_step(groups, max(int(budget), 0), ctx)
        for route in routes:
            self._record(route)
        return routes

    # --------------------------------------------------------------------------------------- online mode
    def begin_step(self, n_groups: int | None = None) -> None:
        """Start a step of online routing.

        With ``n_groups`` known the step cap is :meth:`step_budget`; otherwise it is ⌈share · groups seen⌉ since
        this call (or since construction when it is never called).
        """
        self._step_cap = None if n_groups is None else self.step_budget(n_groups)
        self._step_seen = 0
        self._step_used = 0

    def route_online(self, group: GroupView, remaining: int | None = None) -> Route:
        """Route one streamed group with the pacing rule (see :mod:`coact_verl.router.select`).

        Args:
            group: the group to route.
            remaining: labels the oracle service reports as left in the total budget, if known.
        """
        self._step_seen += 1
        self._remaining = remaining
        band = band_of(group, self.cfg.self_label_threshold)
        self._rho.append(group.agreement)
        self._is_self_band.append(band is Band.SELF)
        self._last_dist = None
        if band is Band.SELF:
            self._self_rho.append(group.agreement)
            if self.policy.uses_knn and self._reference and group.embedding is not None:
                self._last_dist = float(self.knn_distances(np.asarray(group.embedding)[None, :])[0])
                self._dist.append(self._last_dist)
        route = self.policy.route_online(group, self)
        if route.is_oracle:
            self._step_used += 1
        self._record(route)
        return route

    def has_budget(self) -> bool:
        """Whether the per-step cap and the total budget (own count and the service's ``remaining``) allow one more."""
        cap = self._step_cap
        if cap is None:
            cap = math.ceil(self.cfg.oracle_share_per_step * max(self._step_seen, 1) - 1e-9)
        if self._step_used >= cap:
            return False
        if self.budget_total is not None and self._used_total >= self.budget_total:
            return False
        return self._remaining is None or self._remaining > 0

    def admit_low_agreement(self, group: GroupView, share: float) -> bool:
        """Pacing test on the window of recent agreements of all groups."""
        return admit_lowest(self._rho, group.agreement, share, self.rng)

    def admit_far(self, group: GroupView, share: float) -> bool:
        """Pacing test on the k-NN distance window, rescaled to the self band's share of recent groups."""
        f_self = max(float(np.mean(self._is_self_band)) if self._is_self_band else 1.0, 1.0 / len(self._rho))
        within = min(share / f_self, 1.0)
        if self._last_dist is None:  # nothing verified yet (or no embedding): lowest agreement in the band
            return admit_lowest(self._self_rho, group.agreement, within, self.rng)
        return admit_highest(self._dist, self._last_dist, within, self.rng)

    # ------------------------------------------------------------------------------------------- metrics
    def _record(self, route: Route) -> None:
        self._counts[route.action.value] += 1
        self._counts[f"{route.action.value}/{route.reason.value}"] += 1
        if route.is_oracle:
            self._used_total += 1

    @property
    def oracle_used_total(self) -> int:
        """Groups routed to the oracle since the start (advisory: the service may refuse some)."""
        return self._used_total

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Fractions of groups routed since the last reset: ``router/{self,oracle,drop}_frac`` and
        ``router/oracle_frac/<reason>``, plus ``router/groups``, ``router/oracle_used_total`` and
        ``router/reference_size``."""
        n = self._counts[Action.SELF.value] + self._counts[Action.ORACLE.value] + self._counts[Action.DROP.value]
        denom = max(n, 1)
        out = {f"router/{a.value}_frac": self._counts[a.value] / denom for a in Action}
        for reason in ORACLE_REASONS:
            out[f"router/oracle_frac/{reason.value}"] = self._counts[f"oracle/{reason.value}"] / denom
        out.update(
            {
                "router/groups": float(n),
                "router/oracle_used_total": float(self._used_total),
                "router/reference_size": float(len(self._reference)),
            }
        )
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
            "self_band_window": list(self._is_self_band),
            "self_rho_window": list(self._self_rho),
            "dist_window": list(self._dist),
            "carry": self._carry,
            "used_total": self._used_total,
            "step": [self._step_cap, self._step_seen, self._step_used],
            "rng": self.rng.bit_generator.state,
            "counts": dict(self._counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the configured policy may differ from the saved one)."""
        self._reference.clear()
        self._reference_array = None
        reference = np.asarray(state["reference"], dtype=np.float32)
        if reference.size:
            self.add_verified(reference)
        for window, key in (
            (self._rho, "rho_window"),
            (self._is_self_band, "self_band_window"),
            (self._self_rho, "self_rho_window"),
            (self._dist, "dist_window"),
        ):
            window.clear()
            window.extend(state[key])
        self._carry = float(state["carry"])
        self._used_total = int(state["used_total"])
        self._step_cap, self._step_seen, self._step_used = state["step"]
        self.rng.bit_generator.state = state["rng"]
        self._counts = Counter(state["counts"])
