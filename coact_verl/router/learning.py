"""What the router learns from oracle labels: branch yields, the agreement calibration curve and the audit.

* :class:`BranchYield`: per acquisition branch (``low_agreement``, ``knn``, ``spot_check``, ``audit``), a Beta
  posterior over the share of its oracle labels that changed what the model trains on (a wrong self-label
  corrected, or a dropped group rescued). Counts decay by a factor per step so the posteriors follow the
  policy as it improves. :meth:`BranchYield.thompson_shares` splits a budget by Thompson sampling in its
  probability-matching form: each branch gets the posterior probability that its yield is the highest.
* :class:`Calibration`: per (task, agreement level), oracle outcomes of the majority answer, giving
  P(majority correct | level) with a Beta(1, 1) prior.
* :class:`Audit`: outcomes of uniformly random self-labelled groups; an unbiased estimate of self-label
  precision with a Wilson 95% interval (see :func:`wilson_interval`).

All state is plain Python (dicts of lists, floats), so it round-trips through ``state_dict`` and pickling.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

BRANCHES = ("low_agreement", "knn", "spot_check", "audit")


def wilson_interval(successes: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``); ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def level_key(agreement: float) -> str:
    """Dictionary key of an agreement level (ρ rounded to 4 decimals, e.g. ``"0.7500"``)."""
    return f"{agreement:.4f}"


def changed_target(default_self: bool, majority_correct: bool, any_correct: bool) -> bool:
    """Whether an oracle label changed what the model trains on.

    A group the router would have self-labelled changes when its majority answer is wrong; a group it would
    have dropped changes when some response is right (it now teaches instead of being discarded).
    """
    return (not majority_correct) if default_self else bool(any_correct)


class BranchYield:
    """Discounted Beta posteriors of each branch's yield (share of labels that changed the training target).

    Args:
        discount: factor applied to every count at each :meth:`decay` (once per step), in (0, 1].
        prior: Beta(prior, prior) before any label.
    """

    def __init__(self, discount: float = 0.95, prior: float = 1.0) -> None:
        self.discount = discount
        self.prior = prior
        self.counts: dict[str, list[float]] = {b: [0.0, 0.0] for b in BRANCHES}  # [changed, unchanged]
        self.labels: dict[str, int] = dict.fromkeys(BRANCHES, 0)  # undiscounted totals (for logging)
        self.changed: dict[str, int] = dict.fromkeys(BRANCHES, 0)

    def update(self, branch: str, changed: bool) -> None:
        c = self.counts.setdefault(branch, [0.0, 0.0])
        c[0 if changed else 1] += 1.0
        self.labels[branch] = self.labels.get(branch, 0) + 1
        self.changed[branch] = self.changed.get(branch, 0) + int(changed)

    def decay(self) -> None:
        for c in self.counts.values():
            c[0] *= self.discount
            c[1] *= self.discount

    def mean(self, branch: str) -> float:
        a, b = self.counts.get(branch, [0.0, 0.0])
        return (a + self.prior) / (a + b + 2.0 * self.prior)

    def thompson_shares(self, branches: Sequence[str], rng: np.random.Generator, draws: int = 256) -> dict[str, float]:
        """P(branch has the highest yield) under the posteriors, estimated from ``draws`` joint samples."""
        if not branches:
            return {}
        alpha = np.array([self.counts.get(b, [0.0, 0.0])[0] + self.prior for b in branches])
        beta = np.array([self.counts.get(b, [0.0, 0.0])[1] + self.prior for b in branches])
        samples = rng.beta(alpha[None, :], beta[None, :], size=(draws, len(branches)))
        wins = np.bincount(np.argmax(samples, axis=1), minlength=len(branches)) / draws
        return {b: float(w) for b, w in zip(branches, wins, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": {k: list(v) for k, v in self.counts.items()},
            "labels": dict(self.labels),
            "changed": dict(self.changed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {k: [float(x) for x in v] for k, v in state.get("counts", {}).items()}
        for b in BRANCHES:
            self.counts.setdefault(b, [0.0, 0.0])
        self.labels = {**dict.fromkeys(BRANCHES, 0), **state.get("labels", {})}
        self.changed = {**dict.fromkeys(BRANCHES, 0), **state.get("changed", {})}


class Calibration:
    """P(majority correct | task, agreement level), estimated from oracle outcomes.

    Args:
        min_labels: oracle outcomes a level needs before its estimate is used for decisions.
    """

    def __init__(self, min_labels: int = 20) -> None:
        self.min_labels = min_labels
        self.table: dict[str, dict[str, list[int]]] = {}  # task -> level -> [n, majority correct]

    def update(self, task: str, agreement: float, majority_correct: bool) -> None:
        for key in {task, "all"}:
            cell = self.table.setdefault(key, {}).setdefault(level_key(agreement), [0, 0])
            cell[0] += 1
            cell[1] += int(majority_correct)

    def estimate(self, task: str | None, agreement: float) -> tuple[float, int]:
        """(posterior mean precision, labels) of the level in ``task`` (``"all"`` when the task has none yet)."""
        cell = self.table.get(task or "all", {}).get(level_key(agreement))
        if cell is None or cell[0] < self.min_labels:
            cell = self.table.get("all", {}).get(level_key(agreement), [0, 0])
        n, k = cell
        return (k + 1.0) / (n + 2.0), n

    def trusted(self, task: str | None, agreement: float, target: float) -> bool | None:
        """Whether the level meets ``target`` precision; ``None`` while it has fewer than ``min_labels`` outcomes."""
        mean, n = self.estimate(task, agreement)
        if n < self.min_labels:
            return None
        return mean >= target

    def curve(self) -> dict[str, float]:
        """``{"<task>/<level>": precision}`` for every level seen, plus ``"<task>/<level>/n"`` label counts."""
        out: dict[str, float] = {}
        for task, levels in sorted(self.table.items()):
            for level, (n, k) in sorted(levels.items()):
                out[f"{task}/{level}"] = (k + 1.0) / (n + 2.0)
                out[f"{task}/{level}/n"] = float(n)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {t: {lv: list(c) for lv, c in levels.items()} for t, levels in self.table.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table = {t: {lv: [int(c[0]), int(c[1])] for lv, c in levels.items()} for t, levels in state.items()}


class Audit:
    """Outcomes of uniformly random self-labelled groups: ``(agreement, task, majority correct)`` triples.

    The precision of the self-labels in force is estimated from the audited groups whose level is still
    self-labelled (``keep``): a uniform sample of a superset restricted to a subset is a uniform sample of the
    subset, so the estimate stays unbiased after the guard raises τ_self or the calibration drops a level.

    Args:
        window: most recent audit outcomes kept.
    """

    def __init__(self, window: int = 512) -> None:
        self.outcomes: deque[tuple[float, str, bool]] = deque(maxlen=window)

    def update(self, agreement: float, task: str | None, majority_correct: bool) -> None:
        self.outcomes.append((float(agreement), task or "", bool(majority_correct)))

    def estimate(self, keep: Callable[[float, str], bool] | None = None) -> tuple[float, float, float, int]:
        """(precision, Wilson 95% low, high, n) of the outcomes ``keep(agreement, task)`` accepts (``None``: all)."""
        kept = [ok for rho, task, ok in self.outcomes if keep is None or keep(rho, task)]
        n = len(kept)
        k = sum(kept)
        low, high = wilson_interval(k, n)
        return (k / n if n else float("nan")), low, high, n

    def state_dict(self) -> list[list[Any]]:
        return [[rho, task, ok] for rho, task, ok in self.outcomes]

    def load_state_dict(self, state: Iterable[Sequence[Any]]) -> None:
        self.outcomes.clear()
        self.outcomes.extend((float(rho), str(task), bool(ok)) for rho, task, ok in state)
