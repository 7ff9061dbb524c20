"""Pathological answers cost at most the configured timeout in one worker and never stall other groups."""

from __future__ import annotations

import time

import pytest

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency import AnswerClusterer, extract_answer, score_groups

TIMEOUT_S = 2.0
NESTED = "{" * 50_000 + "1" + "}" * 50_000  # 100 KB of nested braces
TOWER = "9^{9^{9^{9}}}"


@pytest.mark.parametrize("workers", [1, 3])
def test_worker_count_reaches_the_pool(workers):
    with AnswerClusterer(ConsistencyConfig(task="math", verify_workers=workers)) as clusterer:
        clusterer.warmup()
        assert clusterer._get_pool().num_workers == workers
        assert len(clusterer._get_pool()._workers) == workers


def test_pathological_answers_cost_at_most_the_timeout():
    config = ConsistencyConfig(task="math", verify_workers=2, verify_timeout_s=TIMEOUT_S)
    with AnswerClusterer(config) as clusterer:
        clusterer.warmup()
        normal = ["\\frac{1}{2}", "0.5", "\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "x^2+2x+1", "(x+1)^2"]
        start = time.perf_counter()
        baseline = clusterer.cluster_many([normal])
        normal_s = time.perf_counter() - start

        groups = [[TOWER, f"{TOWER}+1", "\\sqrt{" + TOWER + "}"], [NESTED, NESTED + " ", "1"], list(reversed(normal))]
        start = time.perf_counter()
        clusters = clusterer.cluster_many(groups)
        elapsed = time.perf_counter() - start
        # Each pathological form is parsed once, in parallel with the rest: a few timeouts plus worker restarts.
        assert elapsed < normal_s + 4 * TIMEOUT_S + 10.0, elapsed
        assert clusters[0] == [0, 1, 2]  # nothing that timed out is equal to anything
        assert clusters[1][2] not in clusters[1][:2]
        assert baseline[0] == clusters[2] == [0, 0, 1, 1, 2, 2]  # the normal group is unaffected
        assert clusterer.same("\\frac{1}{2}", "0.5")  # and the clusterer keeps working


def test_huge_responses_extract_fast_and_score():
    responses = [NESTED, "x" * 100_000 + "\\boxed{3}", "\\boxed{" * 20_000, "The answer is 3"]
    start = time.perf_counter()
    answers = [extract_answer(r, "math") for r in responses]
    assert time.perf_counter() - start < 1.0
    assert answers[1] == "3" and answers[3] == "3"
    with AnswerClusterer(ConsistencyConfig(task="math", verify_workers=1, verify_timeout_s=TIMEOUT_S)) as clusterer:
        stats = score_groups([responses], "math", clusterer)[0]
        assert stats.majority_answer == "3" and stats.cluster_sizes[0] == 2
