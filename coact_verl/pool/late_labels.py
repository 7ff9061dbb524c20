"""Oracle labels that arrive after their step (human annotators, a slow oracle) go back into the prompt pool.

The trainer reads the oracle's label log (``GET /v1/labels``, in commit order) once per step from the pool's
``label_cursor``. A label is *late* when the group it answers was not already labelled by it during its own
training step (the step's in-step oracle labels are recorded first, so an automatic backend's answers are
never counted twice). A late label with an answer makes its prompt an ``oracle`` prompt of the pool and
queues it for training, where the group step scores the new responses against that label. A late label
without an answer (every candidate marked wrong, nothing typed) teaches nothing and is only counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coact_verl.pool.pool import PromptPool

#: In-step labels remembered per step: enough for every group of a step, bounded over a long run.
KEEP_STEPS = 64


@dataclass
class LateLabelTracker:
    """Remembers which ``(prompt_id, step)`` groups were labelled by the oracle within their own step."""

    in_step: dict[int, set[str]] = field(default_factory=dict)

    def record_in_step(self, prompt_id: str, step: int) -> None:
        self.in_step.setdefault(int(step), set()).add(str(prompt_id))
        for old in [s for s in self.in_step if s <= step - KEEP_STEPS]:
            del self.in_step[old]

    def was_in_step(self, prompt_id: str, step: int) -> bool:
        return str(prompt_id) in self.in_step.get(int(step), ())

    def apply(self, pool: PromptPool, records: Iterable[Mapping[str, Any]], step: int) -> dict[str, int]:
        """Put the late labels among ``records`` (``GET /v1/labels`` items) into ``pool``; advance its cursor.

        Returns counts ``{"late": added to the pool, "late_unusable": late without an answer}``.
        """
        counts = {"late": 0, "late_unusable": 0}
        for record in records:
            pool.label_cursor = max(pool.label_cursor, int(record["id"]))
            if self.was_in_step(record["prompt_id"], record["step"]):
                continue
            label = record.get("label") or {}
            answer = label.get("answer")
            if not answer or not record.get("prompt"):
                counts["late_unusable"] += 1
                continue
            verdicts = label.get("correct") or []
            pool.add_oracle_label(
                str(record["prompt_id"]),
                str(answer),
                int(step),
                question=str(record["prompt"]),
                task=str(record["task"]),
                majority_correct=bool(verdicts[0]) if verdicts and verdicts[0] is not None else None,
                late=True,
            )
            counts["late"] += 1
        return counts
