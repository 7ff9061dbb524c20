"""Gold backend: checks each candidate against the hidden gold answer of its prompt."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from coact_verl.oracle.backends.base import Candidate, LabelQuery, LabelResult, accepted_answer

if TYPE_CHECKING:
    from coact_verl.consistency import AnswerClusterer

Equivalence = Callable[[str, str], bool]
Extractor = Callable[[str, str], "str | None"]

_NUMBER_NOISE = re.compile(r"[\s,$]|\\!|\\,")


def exact_or_numeric(a: str, b: str) -> bool:
    """Cheap equivalence: equal as numbers (relative tolerance 1e-9, ``,``/``$``/spaces ignored) or as stripped text."""
    x, y = a.strip().rstrip("."), b.strip().rstrip(".")
    if x == y:
        return True
    try:
        fx, fy = float(_NUMBER_NOISE.sub("", x)), float(_NUMBER_NOISE.sub("", y))
    except ValueError:
        return x.casefold() == y.casefold()
    return math.isclose(fx, fy, rel_tol=1e-9, abs_tol=1e-12)


class _Clusterer:
    """``lanes`` shared ``coact_verl.consistency.AnswerClusterer``s of one math-verify worker each (started on first
    need). A query's answers go to the lane with the fewest queries in flight, so a query whose answers each run
    to the per-answer timeout holds up only its own lane, never every other query."""

    def __init__(self, lanes: int = 2, timeout_s: float = 5.0) -> None:
        if lanes < 1 or timeout_s <= 0:
            raise ValueError("math-verify lanes must be >= 1 and its timeout > 0")
        self._lanes: list[AnswerClusterer | None] = [None] * lanes
        self._busy = [0] * lanes
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def same_many(self, pairs: list[tuple[str, str]], task: str) -> list[bool]:
        with self._lock:
            lane = min(range(len(self._lanes)), key=self._busy.__getitem__)
            self._busy[lane] += 1
        try:
            return self._get(lane).same_many(pairs, task)
        finally:
            with self._lock:
                self._busy[lane] -= 1

    def same_many_now(self, pairs: list[tuple[str, str]], task: str) -> list[bool | None] | None:
        return self._get(0).same_many_now(pairs, task)  # in-process only: no worker is used

    def _get(self, lane: int) -> AnswerClusterer:
        with self._lock:
            clusterer = self._lanes[lane]
            if clusterer is None:
                from coact_verl.config import ConsistencyConfig
                from coact_verl.consistency import AnswerClusterer

                config = ConsistencyConfig(verify_workers=1, verify_timeout_s=self._timeout_s)
                clusterer = self._lanes[lane] = AnswerClusterer(config)
            return clusterer

    def close(self) -> None:
        with self._lock:
            for clusterer in self._lanes:
                if clusterer is not None:
                    clusterer.close()


def _default_extract(text: str, task: str) -> str | None:
    from coact_verl.consistency import extract_answer

    return extract_answer(text, task)


class GoldBackend:
    """Marks a candidate correct when its answer is equivalent to the gold answer.

    Args:
        equivalent: ``same(reference, answer) -> bool`` used for every task; ``None`` uses
            ``coact_verl.consistency.AnswerClusterer`` (canonical forms, then math-verify in a process pool).
        extract: ``extract(response, task) -> answer | None`` for candidates sent without an answer;
            ``None`` uses ``coact_verl.consistency.extract_answer`` with the default equivalence, else no extraction.
        offload: ``True`` always checks in a worker thread, after the charge; ``False`` never; ``None`` (default)
            checks inside the charging transaction what can be decided in-process (any given equivalence; the
            default one's canonical forms and numbers) and in a worker thread only answers that need math-verify.
        verify_lanes: math-verify worker processes (default equivalence); each query uses one, the least busy.
        verify_timeout_s: hard timeout of one math-verify comparison (a timeout counts as "not equivalent").
    """

    name = "gold"
    needs_gold = True
    automatic = True

    def __init__(
        self,
        equivalent: Equivalence | None = None,
        extract: Extractor | None = None,
        offload: bool | None = None,
        verify_lanes: int = 2,
        verify_timeout_s: float = 5.0,
    ) -> None:
        self._fixed = equivalent
        self._clusterer = _Clusterer(verify_lanes, verify_timeout_s) if equivalent is None else None
        self._extract = extract if extract is not None else (_default_extract if equivalent is None else None)
        self._offload = equivalent is None if offload is None else offload
        self.inline = offload is not True  # see ``offload``

    def verify(self, candidates: Sequence[Candidate], gold: str, task: str) -> tuple[bool, ...]:
        """Per-candidate correctness against ``gold`` (a candidate with no answer is incorrect)."""
        verdicts = self._verify(candidates, gold, task, now=False)
        assert verdicts is not None
        return verdicts

    def _verify(self, candidates: Sequence[Candidate], gold: str, task: str, now: bool) -> tuple[bool, ...] | None:
        """:meth:`verify`; with ``now``, ``None`` unless the default equivalence decides every answer in-process."""
        extract = self._extract
        answers = [
            c.answer if c.answer is not None or extract is None else extract(c.response, task) for c in candidates
        ]
        distinct = sorted({a for a in answers if a is not None})
        pairs = [(gold, a) for a in distinct]
        verdicts: Sequence[bool | None] | None
        if self._fixed is not None:
            verdicts = [bool(self._fixed(gold, a)) for a in distinct]
        elif now:
            # Without a fixed equivalence the constructor always builds the clusterer.
            verdicts = cast(_Clusterer, self._clusterer).same_many_now(pairs, task)
            if verdicts is None or None in verdicts:
                return None
        else:
            verdicts = cast(_Clusterer, self._clusterer).same_many(pairs, task)
        same = dict(zip(distinct, verdicts, strict=True))
        return tuple(a is not None and bool(same[a]) for a in answers)

    async def truth(self, query: LabelQuery) -> tuple[bool, ...]:
        """Gold verdicts for ``query`` (which must carry ``gold``)."""
        if query.gold is None:
            raise ValueError("gold backend needs a gold answer")
        args = (list(query.candidates), query.gold, query.task)
        if self._offload:
            return await asyncio.to_thread(self.verify, *args)
        return self.verify(*args)

    async def label(self, query: LabelQuery) -> LabelResult:
        """Label by gold verification; the accepted answer is a candidate's, never the gold text itself."""
        return self._result(await self.truth(query), query)

    def label_now(self, query: LabelQuery) -> LabelResult | None:
        """Synchronous :meth:`label` (for ``inline`` use); ``None`` when an answer needs math-verify's pool, which
        only :meth:`label` waits for."""
        if query.gold is None:
            raise ValueError("gold backend needs a gold answer")
        verdicts = self._verify(query.candidates, query.gold, query.task, now=True)
        return None if verdicts is None else self._result(verdicts, query)

    def _result(self, correct: tuple[bool, ...], query: LabelQuery) -> LabelResult:
        return LabelResult(correct=correct, answer=accepted_answer(query.candidates, correct), source=self.name)

    async def aclose(self) -> None:
        """Stop the math-verify workers, if any were started."""
        if self._clusterer is not None:
            self._clusterer.close()
