"""pass@k and maj@n from n sampled responses per problem, with the training-time answer clustering.

A sample is correct when its answer falls in the equivalence cluster that the gold answer matches
(:func:`~coact_verl.consistency.groups.label_clusters`, the same test as the gold oracle), so ``0.5`` and
``\\frac12`` count alike. maj@n is correct when that cluster is the majority cluster (cluster 0; ties between
equally large clusters go to the one whose first member came first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coact_verl.consistency.equivalence import AnswerClusterer
from coact_verl.consistency.groups import GroupStats, label_clusters, score_groups


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct out of ``n`` samples: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class ProblemScore:
    """Correctness of one problem's samples.

    Attributes:
        stats: answers and clusters of the n samples.
        gold_cluster: cluster the gold answer matches; ``-1`` when no sample matches it.
    """

    stats: GroupStats
    gold_cluster: int

    @property
    def correct(self) -> list[bool]:
        """Per sample, shape ``(n,)``: the sample's answer is equivalent to the gold answer."""
        return [self.gold_cluster >= 0 and c == self.gold_cluster for c in self.stats.cluster_of]

    @property
    def num_correct(self) -> int:
        """Correct samples, in ``[0, n]``."""
        return sum(self.correct)

    @property
    def majority_correct(self) -> bool:
        """The majority answer is equivalent to the gold answer."""
        return self.gold_cluster == 0


def score_samples(
    samples: Sequence[Sequence[str]], golds: Sequence[str], task: str, clusterer: AnswerClusterer
) -> list[ProblemScore]:
    """Score every problem: ``samples`` has shape ``(problems, n)``, ``golds`` shape ``(problems,)``."""
    if len(samples) != len(golds):
        raise ValueError(f"{len(samples)} sample groups but {len(golds)} gold answers")
    stats = score_groups(samples, task, clusterer)
    gold_clusters = label_clusters(stats, list(golds), clusterer, task)
    return [ProblemScore(s, g) for s, g in zip(stats, gold_clusters, strict=True)]


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary over per-problem rows that carry ``n``, ``correct`` (bools, shape ``(n,)``) and ``agreement``.

    Returns:
        ``problems``, ``samples``, ``correct_samples``, ``majority_correct``, ``pass@1`` (mean over problems of
        correct/n), ``pass@n`` (share of problems with any correct sample), ``maj@n``, ``no_answer_rate``
        (samples without an extractable answer / samples) and ``mean_agreement``; rates lie in [0, 1].
    """
    if not rows:
        raise ValueError("no problems to summarize")
    samples = sum(int(r["n"]) for r in rows)
    return {
        "problems": len(rows),
        "samples": samples,
        "correct_samples": sum(sum(r["correct"]) for r in rows),
        "majority_correct": sum(bool(r["majority_correct"]) for r in rows),
        "pass@1": _mean([pass_at_k(int(r["n"]), sum(r["correct"]), 1) for r in rows]),
        "pass@n": _mean([pass_at_k(int(r["n"]), sum(r["correct"]), int(r["n"])) for r in rows]),
        "maj@n": _mean([float(bool(r["majority_correct"])) for r in rows]),
        "no_answer_rate": sum(sum(1 for a in r["answers"] if a is None) for r in rows) / samples,
        "mean_agreement": _mean([float(r["agreement"]) for r in rows]),
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
