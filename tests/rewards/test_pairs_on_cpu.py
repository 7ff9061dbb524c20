"""Chosen/rejected construction from labelled groups, edits and votes."""

import numpy as np
import pytest

from coact_verl.rewards.pairs import Pair, edit_pair, make_pair, select_pair, vote_pair


def test_coact_rule_last_of_label_cluster_vs_shortest_of_least_voted():
    clusters = [0, 0, 1, 0, 2, 2, None, 0]
    lengths = [50, 40, 90, 60, 30, 20, 70, 80]
    # label cluster 0 -> chosen = its last member, index 7.
    # other clusters: {1: 1 vote, 2: 2 votes, no-answer: 1 vote}; least voted = cluster 1 and no-answer
    # -> the shorter of index 2 (90) and index 6 (70) -> 6.
    assert select_pair(clusters, 0, lengths) == (7, 6)
    # label cluster 2 (e.g. the oracle's answer): chosen = index 5; rejected among {1, no-answer} -> 6 again
    assert select_pair(clusters, 2, lengths) == (5, 6)


def test_ties_in_length_break_by_index_and_numpy_negative_ids_mean_no_answer():
    clusters = np.array([3, -1, 3, 4, -1, 5])
    # sizes: 3 -> 2, no-answer -> 2, 4 -> 1, 5 -> 1; least voted {4, 5}, both of length 10 -> lower index 3
    assert select_pair(clusters, np.int64(3), [10, 10, 10, 10, 10, 10]) == (2, 3)


@pytest.mark.parametrize(
    ("clusters", "label"),
    [
        ([1, 1, 1, 1], 1),  # unanimous: no other cluster
        ([1, 2, 2], None),  # no label
        ([1, 2, 2], -1),  # "no answer" can never be the label
        ([None, None], None),
        ([1, 2, 2], 7),  # label cluster absent from the group (e.g. the oracle's answer nobody found)
    ],
)
def test_no_pair(clusters, label):
    assert select_pair(clusters, label, [1] * len(clusters)) is None
    assert make_pair("p", clusters, label, [1] * len(clusters)) is None


def test_oracle_correctness_filters_both_sides():
    clusters = [0, 1, 0, 2]
    lengths = [5, 1, 5, 9]
    # index 2 (last of the label cluster) was judged wrong; index 1 is correct but was clustered apart
    assert select_pair(clusters, 0, lengths, correct=[True, True, False, False]) == (0, 3)
    assert select_pair(clusters, 0, lengths, correct=[False, None, False, None]) is None
    with pytest.raises(ValueError):
        select_pair(clusters, 0, lengths[:3])


def test_make_pair_carries_metadata():
    pair = make_pair("q1", [0, 1, 0], 0, [3, 4, 5], source="oracle", weight=0.5)
    assert pair == Pair("q1", 2, 1, "oracle", 0.5)


def test_edit_and_vote_pairs():
    assert edit_pair("q", "x = 4", "x = 5") == Pair("q", "x = 5", "x = 4", "edit")
    assert edit_pair("q", "x = 4", "  x = 4\n") is None
    assert edit_pair("q", "x = 4", "   ") is None
    assert vote_pair("q", "a text", "b text", picked_a=False, weight=0.8) == Pair("q", "b text", "a text", "vote", 0.8)
    assert vote_pair("q", 0, 1, picked_a=True).chosen == 0


@pytest.mark.parametrize("kwargs", [{"source": "gold"}, {"weight": -1.0}, {"weight": float("nan")}, {"rejected": 1}])
def test_pair_validation(kwargs):
    base = {"prompt_id": "q", "chosen": 1, "rejected": 2, "source": "self", "weight": 1.0}
    with pytest.raises(ValueError):
        Pair(**{**base, **kwargs})
