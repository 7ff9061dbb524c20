"""Per-prompt group statistics: majority answer, agreement and answer entropy over n responses.

This is the CoAct group signal: agreement ρ = (size of the largest equivalence cluster) / n decides whether a
prompt is self-labelled or sent to the oracle, and ``rewards_for_cluster`` turns a label (the majority cluster
or an oracle's answer) into binary per-response rewards r_i = 1[â_i ≡ label].
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coact_verl.consistency.equivalence import AnswerClusterer
from coact_verl.consistency.extract import extract_answer


@dataclass(frozen=True)
class GroupStats:
    """Answer statistics of one prompt's n responses.

    Attributes:
        answers: extracted answer per response, shape ``(n,)``; ``None`` = no answer.
        cluster_of: cluster index per response, shape ``(n,)``; ``-1`` = no answer.
        cluster_sizes: responses per cluster, shape ``(k,)``, by size desc, ties by first appearance.
        cluster_answers: representative (first-seen) answer per cluster, shape ``(k,)``.
        majority_answer: representative of cluster 0; ``None`` when no response has an answer.
        agreement: ``cluster_sizes[0] / n`` in [0, 1] (no-answer responses count in n); 0 without answers.
        entropy: answer entropy in nats over clusters, no-answer responses forming one extra bucket.
    """

    answers: tuple[str | None, ...]
    cluster_of: tuple[int, ...]
    cluster_sizes: tuple[int, ...]
    cluster_answers: tuple[str, ...]
    majority_answer: str | None
    agreement: float
    entropy: float

    @property
    def n(self) -> int:
        """Number of responses."""
        return len(self.answers)

    @property
    def no_answer(self) -> int:
        """Responses without an extractable answer."""
        return sum(1 for c in self.cluster_of if c < 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return {
            "answers": list(self.answers),
            "cluster_of": list(self.cluster_of),
            "cluster_sizes": list(self.cluster_sizes),
            "cluster_answers": list(self.cluster_answers),
            "majority_answer": self.majority_answer,
            "agreement": self.agreement,
            "entropy": self.entropy,
        }


def stats_from_clusters(answers: Sequence[str | None], cluster_of: Sequence[int]) -> GroupStats:
    """Build :class:`GroupStats` from answers and cluster ids numbered by size desc (as the clusterer returns)."""
    n = len(answers)
    if n == 0:
        raise ValueError("a group needs at least one response")
    if len(cluster_of) != n:
        raise ValueError(f"cluster_of has {len(cluster_of)} entries for {n} answers")
    k = max(cluster_of, default=-1) + 1
    sizes = [0] * k
    reps: list[str | None] = [None] * k
    for answer, c in zip(answers, cluster_of, strict=True):
        if c < 0:
            continue
        sizes[c] += 1
        if reps[c] is None:
            reps[c] = answer
    if any(size == 0 for size in sizes):
        raise ValueError(f"cluster ids must be 0..k-1 without gaps, got {sorted(set(cluster_of))}")
    missing = n - sum(sizes)
    entropy = -sum((c / n) * math.log(c / n) for c in [*sizes, missing] if c > 0)
    return GroupStats(
        answers=tuple(answers),
        cluster_of=tuple(int(c) for c in cluster_of),
        cluster_sizes=tuple(sizes),
        cluster_answers=tuple(r for r in reps if r is not None),
        majority_answer=reps[0] if k else None,
        agreement=sizes[0] / n if k else 0.0,
        entropy=max(0.0, entropy),
    )


def extract_answers(responses: Sequence[str], task: str, finished: Sequence[bool] | None = None) -> list[str | None]:
    """Extracted answer per response, shape ``(n,)`` (see :func:`extract_answer`).

    ``finished``: per response, whether it ended on its own (shape ``(n,)``); ``None``: all did.
    """
    if isinstance(responses, str):
        raise TypeError("responses must be a sequence of strings, not one string")
    if finished is None:
        return [extract_answer(r, task) for r in responses]
    if len(finished) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(finished)} finished flags")
    return [extract_answer(r, task, finished=bool(f)) for r, f in zip(responses, finished, strict=True)]


def compute_group_stats(
    responses: Sequence[str], task: str, clusterer: AnswerClusterer, finished: Sequence[bool] | None = None
) -> GroupStats:
    """Extract, cluster and summarise one prompt's responses."""
    return score_groups([responses], task, clusterer, None if finished is None else [finished])[0]


def score_groups(
    groups: Sequence[Sequence[str]],
    task: str,
    clusterer: AnswerClusterer,
    finished: Sequence[Sequence[bool] | None] | None = None,
) -> list[GroupStats]:
    """:func:`compute_group_stats` for many prompts; math-verify work of all groups is batched together.

    ``finished``: per group, its responses' flags for :func:`extract_answers` (``None``: every response ended
    on its own).
    """
    flags = [None] * len(groups) if finished is None else list(finished)
    if len(flags) != len(groups):
        raise ValueError(f"{len(groups)} groups but {len(flags)} lists of finished flags")
    answers = [extract_answers(responses, task, f) for responses, f in zip(groups, flags, strict=True)]
    for i, group in enumerate(answers):
        if not group:
            raise ValueError(f"group {i} has no responses")
    clusters = clusterer.cluster_many(answers, task)
    return [stats_from_clusters(a, c) for a, c in zip(answers, clusters, strict=True)]


async def ascore_groups(
    groups: Sequence[Sequence[str]],
    task: str,
    clusterer: AnswerClusterer,
    finished: Sequence[Sequence[bool] | None] | None = None,
) -> list[GroupStats]:
    """:func:`score_groups` without blocking the running event loop."""
    return await asyncio.to_thread(score_groups, groups, task, clusterer, finished)


def label_cluster(
    stats: GroupStats, label_answer: str | None, clusterer: AnswerClusterer, task: str | None = None
) -> int:
    """Index of the cluster an external label (e.g. an oracle's answer) falls in; ``-1`` if none.

    The label is compared with every distinct answer of a cluster by the canonical fast path and with the
    cluster's representative by math-verify; the first matching cluster in size order wins.
    """
    return label_clusters([stats], [label_answer], clusterer, task)[0]


def label_clusters(
    stats_list: Sequence[GroupStats],
    labels: Sequence[str | None],
    clusterer: AnswerClusterer,
    task: str | None = None,
) -> list[int]:
    """:func:`label_cluster` for many groups, batched into a few math-verify round-trips."""
    if len(stats_list) != len(labels):
        raise ValueError(f"{len(stats_list)} groups but {len(labels)} labels")
    task = clusterer.config.task if task is None else task
    limits: list[int] = []
    for stats, label in zip(stats_list, labels, strict=True):
        limit = len(stats.cluster_sizes)
        if label is None:
            limits.append(-1)
            continue
        forms = _forms_by_cluster(stats)
        for c in range(len(stats.cluster_sizes)):  # a cheap exact match bounds the clusters worth verifying
            if any(clusterer.same_local(label, member, task) for member in forms[c]):
                limit = c
                break
        limits.append(limit)
    pairs = [
        (label, stats.cluster_answers[c])
        for stats, label, limit in zip(stats_list, labels, limits, strict=True)
        for c in range(max(limit, 0))
    ]
    verdicts = iter(clusterer.same_many(pairs, task))
    out = []
    for stats, limit in zip(stats_list, limits, strict=True):
        found = [c for c in range(max(limit, 0)) if next(verdicts)]
        if found:
            out.append(found[0])
        elif 0 <= limit < len(stats.cluster_sizes):
            out.append(limit)
        else:
            out.append(-1)
    return out


async def alabel_clusters(
    stats_list: Sequence[GroupStats],
    labels: Sequence[str | None],
    clusterer: AnswerClusterer,
    task: str | None = None,
) -> list[int]:
    """:func:`label_clusters` without blocking the running event loop."""
    return await asyncio.to_thread(label_clusters, stats_list, labels, clusterer, task)


def rewards_for_cluster(stats: GroupStats, cluster: int) -> list[float]:
    """Per-response reward, shape ``(n,)``: 1.0 if the response's answer is in ``cluster`` else 0.0.

    ``cluster = -1`` (a label that matches no answer) gives all zeros.
    """
    if not -1 <= cluster < len(stats.cluster_sizes):
        raise ValueError(f"cluster must be -1 or in [0, {len(stats.cluster_sizes)}), got {cluster}")
    if cluster < 0:
        return [0.0] * stats.n
    return [1.0 if c == cluster else 0.0 for c in stats.cluster_of]


def _forms_by_cluster(stats: GroupStats) -> list[list[str]]:
    forms: list[dict[str, None]] = [{} for _ in stats.cluster_sizes]
    for answer, c in zip(stats.answers, stats.cluster_of, strict=True):
        if c >= 0 and answer is not None:
            forms[c][answer] = None
    return [list(f) for f in forms]
