"""Human backend: queries wait in a queue until an annotator answers them (``/annotate`` or the task API)."""

from __future__ import annotations

from collections.abc import Sequence

from coact_verl.oracle.backends.base import BackendError, Candidate, LabelQuery, LabelResult, accepted_answer
from coact_verl.oracle.backends.gold import Equivalence, GoldBackend


class HumanBackend:
    """Leaves every query ``pending``; :meth:`verdict` turns an annotator's answer into a label.

    Args:
        equivalent: equivalence used to compare a typed answer with the candidates' answers.
    """

    name = "human"
    needs_gold = False
    automatic = False

    def __init__(self, equivalent: Equivalence | None = None) -> None:
        self._checker = GoldBackend(equivalent=equivalent, offload=False)

    async def label(self, query: LabelQuery) -> LabelResult:
        """Never called for a non-automatic backend."""
        raise BackendError("human labels arrive through the annotator endpoints")

    def verdict(
        self,
        candidates: Sequence[Candidate],
        task: str,
        correct: Sequence[int] | None,
        answer: str | None,
        annotator: str,
    ) -> LabelResult:
        """Label from marked candidate indices (others are incorrect) and/or a typed answer.

        Marked indices decide when given; otherwise each candidate is compared with the typed answer.
        Raises ``ValueError`` for an index out of range.
        """
        n = len(candidates)
        typed = answer.strip() if answer is not None and answer.strip() else None
        if correct is not None:
            bad = [i for i in correct if not 0 <= i < n]
            if bad:
                raise ValueError(f"candidate indices out of range 0..{n - 1}: {bad}")
            marked = set(correct)
            verdicts: tuple[bool | None, ...] = tuple(i in marked for i in range(n))
        else:
            assert typed is not None
            verdicts = self._checker.verify(list(candidates), typed, task)
        accepted = typed if typed is not None else accepted_answer(candidates, verdicts)
        return LabelResult(correct=verdicts, answer=accepted, source=self.name, annotator=annotator)

    async def aclose(self) -> None:
        """Release the answer checker."""
        await self._checker.aclose()
