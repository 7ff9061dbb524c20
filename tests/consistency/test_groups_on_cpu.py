"""Group statistics, label matching and rewards, on hand-made groups and real GSM8K / MATH-500 solutions."""

from __future__ import annotations

import math
import re

import pytest

from coact_verl.consistency import (
    GroupStats,
    ascore_groups,
    compute_group_stats,
    label_cluster,
    label_clusters,
    rewards_for_cluster,
    score_groups,
    stats_from_clusters,
)


def _responses(*finals: str | None) -> list[str]:
    return [f"Let me think step by step.\n{f}" if f is not None else "I am not sure." for f in finals]


def test_group_stats_fields(clusterer):
    responses = _responses(
        "The answer is $\\boxed{\\frac{1}{2}}$.", "So \\boxed{0.5}.", "\\boxed{3}", None, "The answer is: 1/2"
    )
    s = compute_group_stats(responses, "math", clusterer)
    assert s.answers == ("\\frac{1}{2}", "0.5", "3", None, "1/2")
    assert s.cluster_of == (0, 0, 1, -1, 0)
    assert s.cluster_sizes == (3, 1)
    assert s.cluster_answers == ("\\frac{1}{2}", "3")
    assert s.majority_answer == "\\frac{1}{2}"
    assert s.agreement == pytest.approx(3 / 5)
    expected = -(0.6 * math.log(0.6) + 0.2 * math.log(0.2) + 0.2 * math.log(0.2))  # 3 / 1 / 1 no-answer
    assert s.entropy == pytest.approx(expected)
    assert s.n == 5 and s.no_answer == 1
    assert s.to_dict()["cluster_sizes"] == [3, 1]


def test_unanimous_and_empty_answer_groups(clusterer):
    s = compute_group_stats(_responses("#### 4", "#### 4.0", "The answer is 4."), "gsm8k", clusterer)
    assert (s.agreement, s.entropy, s.cluster_sizes) == (1.0, 0.0, (3,))
    none = compute_group_stats(["no digits here", "nor here"], "math", clusterer)
    assert none.majority_answer is None and none.agreement == 0.0 and none.entropy == 0.0
    assert none.cluster_sizes == () and none.cluster_of == (-1, -1)


def test_ties_are_broken_by_first_appearance(clusterer):
    s = compute_group_stats(_responses("#### 5", "#### 6", "#### 6", "#### 5"), "gsm8k", clusterer)
    assert s.majority_answer == "5" and s.cluster_of == (0, 1, 1, 0) and s.agreement == 0.5


def test_label_cluster_finds_the_oracle_answer(clusterer):
    finals = ("\\boxed{\\frac{\\sqrt2}{2}}", "\\boxed{\\sqrt{2}/2}", "\\boxed{1}", "\\boxed{(1,2)}")
    s = compute_group_stats(_responses(*finals), "math", clusterer)
    assert s.cluster_sizes == (2, 1, 1)
    assert label_cluster(s, "\\frac{1}{\\sqrt{2}}", clusterer) == 0  # needs math-verify
    assert label_cluster(s, "1.0", clusterer) == 1  # canonical fast path
    assert label_cluster(s, "\\left(1, 2\\right)", clusterer) == 2
    assert label_cluster(s, "\\frac{3}{7}", clusterer) == -1
    assert label_cluster(s, None, clusterer) == -1
    assert label_clusters([s, s], ["1", "7"], clusterer) == [1, -1]
    with pytest.raises(ValueError):
        label_clusters([s], [], clusterer)


def test_rewards_for_cluster(clusterer):
    s = compute_group_stats(_responses("#### 1", "#### 2", None, "#### 1"), "gsm8k", clusterer)
    assert rewards_for_cluster(s, 0) == [1.0, 0.0, 0.0, 1.0]
    assert rewards_for_cluster(s, 1) == [0.0, 1.0, 0.0, 0.0]
    assert rewards_for_cluster(s, -1) == [0.0] * 4
    with pytest.raises(ValueError):
        rewards_for_cluster(s, 2)


def test_batched_scoring_matches_one_group_at_a_time(clusterer):
    groups = [
        _responses("\\boxed{x^2-1}", "\\boxed{(x-1)(x+1)}", "\\boxed{x^2+1}"),
        _responses("\\boxed{\\{1, 2\\}}", "\\boxed{\\{2,1\\}}", None),
        _responses("\\boxed{10}"),
    ]
    batched = score_groups(groups, "math", clusterer)
    assert batched == [compute_group_stats(g, "math", clusterer) for g in groups]
    assert batched[0].cluster_of == (0, 0, 1)


async def test_async_scoring(clusterer):
    out = await ascore_groups([_responses("#### 3", "#### 3")], "gsm8k", clusterer)
    assert out[0].agreement == 1.0


def test_bad_groups(clusterer):
    with pytest.raises(ValueError, match="no responses"):
        score_groups([[]], "math", clusterer)
    with pytest.raises(TypeError):
        compute_group_stats("\\boxed{1}", "math", clusterer)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compute_group_stats([None], "math", clusterer)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        stats_from_clusters(["1", "2"], [0, 2])


def test_real_solutions_majority_and_gold_cluster(clusterer, reference_data):
    """Majority voting over real GSM8K / MATH-500 solutions whose final answers were rewritten."""
    gsm = reference_data("gsm8k/test.jsonl")[:40]
    math500 = [r for r in reference_data("math500/test.jsonl") if "\\frac" in r["answer"].rsplit(": ", 1)[-1]][:20]
    for rows, task in ((gsm, "gsm8k"), (math500, "math")):
        groups, golds = [], []
        for r in rows:
            sep = "####" if task == "gsm8k" else "The answer is: "
            body, gold = r["answer"].rsplit(sep, 1)
            gold = gold.strip()
            body = re.sub(r"\\boxed\{", "{", body)
            wrong = f"{gold}1" if task == "gsm8k" else f"{gold}+1"  # (``\\frac{1}{2}1`` would still be 1/2)
            rewrite = gold.replace("\\frac", "\\dfrac") if task == "math" else f"{int(gold):,}"
            finals = [f"#### {gold}", f"The answer is {rewrite}.", f"#### {wrong}"]
            if task == "math":
                finals = [f"\\boxed{{{gold}}}", f"The answer is: {rewrite}", f"\\boxed{{{wrong}}}"]
            groups.append([f"{body}\n{f}" for f in finals])
            golds.append(gold)
        stats = score_groups(groups, task, clusterer)
        assert all(s.cluster_sizes == (2, 1) for s in stats), task
        assert label_clusters(stats, golds, clusterer, task) == [0] * len(stats)
        assert all(rewards_for_cluster(s, 0) == [1.0, 1.0, 0.0] for s in stats)


def test_group_stats_is_frozen():
    s = stats_from_clusters(["1"], [0])
    assert isinstance(s, GroupStats)
    with pytest.raises(AttributeError):
        s.agreement = 0.5  # type: ignore[misc]


def test_cut_responses_do_not_vote_with_their_last_expression(clusterer):
    """Three responses cut mid-reasoning at the same intermediate value would outvote the finished answer."""
    cut = "First, 4 * 3 = 12 eggs, then"
    responses = ["#### 15", cut, cut, cut, "#### 15"]
    assert score_groups([responses], "gsm8k", clusterer)[0].majority_answer == "12"
    finished = [True, False, False, False, True]
    (stats,) = score_groups([responses], "gsm8k", clusterer, [finished])
    assert stats.majority_answer == "15"
    assert stats.answers == ("15", None, None, None, "15")
    assert stats.agreement == 2 / 5
    with pytest.raises(ValueError, match="finished flags"):
        score_groups([responses], "gsm8k", clusterer, [finished[:2]])
