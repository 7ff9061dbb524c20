"""Annotator attentiveness η̂ (and μ̂) from all stored votes, by the EM of ``coact_verl.feedback.attentiveness``.

The EM runs on per-annotator counts of the four vote kinds (one index-only SQL scan), and its result is kept
until those counts change, so paging through pairs does not refit it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from coact_verl.feedback.attentiveness import AttentivenessResult, estimate_attentiveness_from_counts

Counts = Mapping[int, tuple[int, int, int, int]]


class AnnotatorQuality:
    """Fits η̂ per annotator with μ fixed to ``mu`` in (½, 1], or estimated jointly when ``mu`` is ``None``.

    Without control votes an estimated μ is only identified up to scale: the most attentive annotator is then
    anchored at η̂ = 1 (see the EM module).
    """

    def __init__(self, mu: float | None) -> None:
        if mu is not None and not 0.5 < mu <= 1.0:
            raise ValueError(f"vote mu must lie in (0.5, 1], got {mu}")
        self.mu = mu
        self._lock = threading.Lock()
        self._cached: tuple[tuple[tuple[int, tuple[int, int, int, int]], ...], AttentivenessResult] | None = None

    def estimate(self, counts: Counts) -> AttentivenessResult:
        """EM fit for ``counts`` ``{annotator: (ordinary stronger, ordinary weaker, control right, control wrong)}``."""
        key = tuple(sorted(counts.items()))
        with self._lock:
            if self._cached is not None and self._cached[0] == key:
                return self._cached[1]
        result = estimate_attentiveness_from_counts(dict(key), self.mu)
        with self._lock:
            self._cached = (key, result)
        return result
