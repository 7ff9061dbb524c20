"""Simulated oracle: a seeded pool of noisy annotators answering on top of gold (AlpacaFarm-style)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from coact_verl.oracle.backends.base import LabelQuery, LabelResult, accepted_answer
from coact_verl.oracle.backends.gold import Equivalence, GoldBackend


@dataclass(frozen=True)
class SimulatedAnnotator:
    """One simulated annotator.

    Args:
        flip_rate: probability of reporting the opposite of the truth for a candidate, in [0, 1].
        position_bias: probability of marking the first-listed candidate correct whatever the truth, in [0, 1].
    """

    flip_rate: float
    position_bias: float = 0.0


class AnnotatorPool:
    """N noisy annotators; each query goes to one annotator chosen from a hash of (seed, key).

    Every draw comes from a generator seeded by (seed, key), so a query gets the same label whatever the
    order or concurrency of the requests: research runs are reproducible.

    Args:
        size: number of annotators (AlpacaFarm's pool has 13).
        flip_rate: mean label-flip probability (AlpacaFarm trains with 0.25).
        flip_spread: annotator rates are drawn uniformly in ``flip_rate ± flip_spread`` (clipped to [0, 1]).
        position_bias: mean primacy bias (see :class:`SimulatedAnnotator`).
        bias_spread: spread of the per-annotator bias, like ``flip_spread``.
        seed: pool seed (annotator rates and every label).
    """

    def __init__(
        self,
        size: int = 13,
        flip_rate: float = 0.25,
        flip_spread: float = 0.0,
        position_bias: float = 0.0,
        bias_spread: float = 0.0,
        seed: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError("annotator pool needs at least one annotator")
        for name, value in (("flip_rate", flip_rate), ("position_bias", position_bias)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.seed = seed
        rng = random.Random(f"pool:{seed}")
        self.annotators = [
            SimulatedAnnotator(
                flip_rate=_clip(flip_rate + rng.uniform(-flip_spread, flip_spread)),
                position_bias=_clip(position_bias + rng.uniform(-bias_spread, bias_spread)),
            )
            for _ in range(size)
        ]

    def _rng(self, key: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}\x00{key}".encode("utf-8", "surrogatepass")).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def judge(self, key: str, truth: Sequence[bool | None]) -> tuple[int, tuple[bool | None, ...]]:
        """Return (annotator index, noisy verdicts) for the query ``key`` whose true verdicts are ``truth``."""
        rng = self._rng(key)
        index = rng.randrange(len(self.annotators))
        annotator = self.annotators[index]
        verdicts: list[bool | None] = []
        for position, true in enumerate(truth):
            flip = rng.random() < annotator.flip_rate
            primacy = rng.random() < annotator.position_bias
            if true is None:
                verdicts.append(None)
            elif position == 0 and primacy:
                verdicts.append(True)
            else:
                verdicts.append((not true) if flip else true)
        return index, tuple(verdicts)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


class SimulatedBackend:
    """Gold verification seen through :class:`AnnotatorPool` noise.

    Args:
        pool: the annotator pool (default: 13 annotators, flip rate 0.25, seed 0).
        equivalent: answer equivalence passed to the underlying :class:`GoldBackend`.
        offload: passed to the underlying :class:`GoldBackend`.
    """

    name = "simulated"
    needs_gold = True
    automatic = True

    def __init__(
        self,
        pool: AnnotatorPool | None = None,
        equivalent: Equivalence | None = None,
        offload: bool | None = None,
        **verify: Any,
    ) -> None:
        self.pool = pool if pool is not None else AnnotatorPool()
        self._gold = GoldBackend(equivalent=equivalent, offload=offload, **verify)  # verify_lanes, verify_timeout_s
        self.inline = self._gold.inline

    async def label(self, query: LabelQuery) -> LabelResult:
        """Label with the noisy verdict of one pool annotator."""
        return self._noisy(await self._gold.truth(query), query)

    def label_now(self, query: LabelQuery) -> LabelResult | None:
        """Synchronous :meth:`label` (for ``inline`` use); ``None`` when the truth needs math-verify's pool."""
        truth = self._gold.label_now(query)
        # The gold backend's verdicts are all bools (a candidate with no answer is incorrect, never ``None``).
        return None if truth is None else self._noisy(cast("tuple[bool, ...]", truth.correct), query)

    def _noisy(self, truth: tuple[bool, ...], query: LabelQuery) -> LabelResult:
        index, verdicts = self.pool.judge(query.key, truth)
        return LabelResult(
            correct=verdicts,
            answer=accepted_answer(query.candidates, verdicts),
            source=self.name,
            annotator=f"sim-{index}",
        )

    async def aclose(self) -> None:
        """Release the gold checker."""
        await self._gold.aclose()
