"""Late oracle labels into training: after each step the trainer reads the oracle's new labels and queues the
prompts whose label came too late for their own step (:mod:`coact_verl.pool.late_labels`).

Mixed in before :class:`~coact_verl.adapters.generation.CoActGenerationMixin`, whose prompt pool holds the
labelled prompts (saved with every checkpoint, the label cursor included) and whose batch injection trains
on them in the following steps.
"""

from __future__ import annotations

import logging

from coact_verl.pool import LateLabelTracker

logger = logging.getLogger(__name__)

#: Label pages read per step at most (``PAGE`` labels each); the rest is read in the next steps.
MAX_PAGES = 10
PAGE = 500


class CoActLateLabelsMixin:
    """Polls ``GET /v1/labels`` once per step and puts late labels into the prompt pool."""

    _late_tracker: LateLabelTracker | None = None

    def _after_batch(self, infos: list[dict], extra_infos: list[dict], metrics: dict) -> None:
        if self._late_tracker is None:
            self._late_tracker = LateLabelTracker()
        step = int(self.global_steps)  # type: ignore[attr-defined]
        for info in infos:
            if info.get("coact_label_source") == "oracle" and info.get("coact_route_reason") != "pool_label":
                self._late_tracker.record_in_step(str(info.get("coact_prompt_id", "")), step)
        if self.oracle_url:  # type: ignore[attr-defined]
            metrics.update(self._read_late_labels(step))
        super()._after_batch(infos, extra_infos, metrics)  # type: ignore[misc]

    def _read_late_labels(self, step: int) -> dict[str, float]:
        client = self._sync_oracle()  # type: ignore[attr-defined]
        pool = self.pool  # type: ignore[attr-defined]
        totals = {"late": 0, "late_unusable": 0}
        for _ in range(MAX_PAGES):
            page = client.labels(since_id=pool.label_cursor, limit=PAGE)
            if page is None:
                logger.warning("oracle label log unreachable; late labels are read in a later step")
                return {"coact/late_labels/unreachable": 1.0}
            counts = self._late_tracker.apply(pool, page["labels"], step)  # type: ignore[union-attr]
            for name, value in counts.items():
                totals[name] += value
            if len(page["labels"]) < PAGE:
                break
        return {f"coact/late_labels/{name}": float(value) for name, value in totals.items()}
