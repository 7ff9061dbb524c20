"""Users' preference pairs (comparison votes, edits) from the oracle service into DPO batches.

After each step the hook reads new pairs (``GET /v1/feedback/pairs`` from its cursor, at most ``MAX_PAGES``
pages) into a :class:`~coact_verl.feedback.queue.FeedbackQueue` and serves up to ``max_pairs_per_step`` of
them per training step as rows of the ``coact_feedback`` agent loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from coact_verl import metric_keys as keys
from coact_verl.config import FeedbackConfig
from coact_verl.feedback.queue import FeedbackQueue
from coact_verl.records import ROUTE_FEEDBACK, ResponseInfo
from coact_verl.step.hooks import StepBatch

PAGE = 500
#: Pages read per step at most; the rest is read in the next steps.
MAX_PAGES = 10


class PairReader(Protocol):
    def feedback_pairs(
        self, since_id: int = 0, limit: int = 500, min_eta: float | None = None
    ) -> dict[str, Any] | None:
        """``{"pairs": [...], "next_since_id": int}``, or ``None`` when the service does not answer."""
        ...


class FeedbackHook:
    """Feedback pairs into batches (see the module docstring). ``oracle``: the service's client."""

    state_file = "coact_feedback.json"

    def __init__(self, config: FeedbackConfig, oracle: PairReader) -> None:
        self.config = config
        self.oracle = oracle
        self.queue = FeedbackQueue()
        self._served = (-1, 0)  # (training step, pairs put into its batches so far)

    def after_step(self, batch: StepBatch) -> dict[str, float]:
        metrics = self._read_pairs()
        metrics.update(self.queue.metrics())
        rows = sum(ResponseInfo.from_extra_info(info).route == ROUTE_FEEDBACK for info in batch.infos)
        metrics[keys.FEEDBACK_BATCH_ROWS] = float(rows)
        return metrics

    def _read_pairs(self) -> dict[str, float]:
        added = 0
        for _ in range(MAX_PAGES):
            before = self.queue.cursor
            page = self.oracle.feedback_pairs(since_id=before, limit=PAGE, min_eta=self.config.min_eta)
            if page is None:
                return {keys.FEEDBACK_UNREACHABLE: 1.0, keys.FEEDBACK_READ: float(added)}
            added += self.queue.extend(page["pairs"], page["next_since_id"])
            if self.queue.cursor == before:  # filtered votes move the cursor too: stop when it stands still
                break
        return {keys.FEEDBACK_READ: float(added)}

    def rows_for_batch(self, step: int, free: int) -> list[dict[str, Any]]:
        # verl may fetch a step's prompts in several dataloader chunks: the cap counts per training step
        served = self._served[1] if self._served[0] == step else 0
        rows = self.queue.take(max(0, min(free, int(self.config.max_pairs_per_step) - served)))
        self._served = (step, served + len(rows))
        return rows

    def state_dict(self) -> dict[str, Any]:
        return self.queue.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.queue.load_state_dict(state)
