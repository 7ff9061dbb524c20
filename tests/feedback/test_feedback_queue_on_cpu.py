"""Feedback pairs waiting for DPO: rows, order, the cursor, the checkpoint, and the group step's row fields."""

from __future__ import annotations

import pytest

from coact_verl.adapters.dpo import pair_rows
from coact_verl.feedback.queue import FEEDBACK_AGENT, FeedbackQueue, feedback_row
from coact_verl.group.labeler import feedback_infos
from coact_verl.records import INFO_KEYS


def pair(i: int, kind: str = "vote", weight: float = 0.9) -> dict:
    return {
        "id": i,
        "kind": kind,
        "prompt_id": f"p{i}",
        "prompt": f"What is {i}?",
        "task": "gsm8k",
        "chosen": f"#### {i}",
        "rejected": "#### 0",
        "weight": weight,
        "annotator": 3,
    }


def test_rows_replay_the_pair_and_carry_no_label():
    row = feedback_row(pair(7, "edit", 1.0))
    assert row["agent_name"] == FEEDBACK_AGENT and row["prompt"] == [{"role": "user", "content": "What is 7?"}]
    extra = row["extra_info"]
    assert extra["coact_feedback"] == {"kind": "edit", "chosen": "#### 7", "rejected": "#### 0", "weight": 1.0}
    assert extra["coact_label"] == "" and extra["coact_label_source"] == "none" and extra["provenance"] == "feedback"
    assert row["reward_model"]["ground_truth"] == ""


def test_queue_order_cursor_and_replays():
    queue = FeedbackQueue()
    assert queue.extend([pair(1), pair(2), pair(5)], next_cursor=9) == 3
    assert queue.cursor == 9  # filtered votes up to 9 were skipped by the service
    assert queue.extend([pair(5)], next_cursor=9) == 0  # a page read twice adds nothing
    assert [r["extra_info"]["index"] for r in queue.take(2)] == [1, 2]
    assert [r["extra_info"]["index"] for r in queue.take(5)] == [5] and queue.take(3) == []
    metrics = queue.metrics()
    assert metrics == {"coact/feedback/queued": 0.0, "coact/feedback/received": 3.0, "coact/feedback/served": 3.0}


@pytest.mark.parametrize(
    "bad", [{"weight": 0.0}, {"chosen": "  "}, {"rejected": None, "kind": "vote", "drop": "rejected"}]
)
def test_malformed_pairs_are_refused_whole(bad):
    broken = {**pair(2), **{k: v for k, v in bad.items() if k != "drop"}}
    if "drop" in bad:
        del broken[bad["drop"]]
    queue = FeedbackQueue()
    with pytest.raises(ValueError, match="malformed feedback pair"):
        queue.extend([broken], next_cursor=2)
    assert len(queue) == 0 and queue.cursor == 0


def test_checkpoint_round_trip_keeps_waiting_pairs(tmp_path):
    queue = FeedbackQueue()
    queue.extend([pair(1), pair(2), pair(3)], next_cursor=3)
    queue.take(1)
    restored = FeedbackQueue.load(queue.save(tmp_path / "ckpt" / "coact_feedback.json"))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["coact_feedback.json"]  # no temporary left
    assert restored.state_dict() == queue.state_dict() and len(restored) == 2
    assert [r["extra_info"]["index"] for r in restored.take(9)] == [2, 3]


def test_feedback_rows_mark_one_weighted_pair_with_the_outcome_keys():
    infos = [info.to_extra_info() for info in feedback_infos(4, "vote", 0.8)]
    assert [i["coact_pair_role"] for i in infos] == ["chosen", "rejected", "", ""]
    assert {i["coact_pair_weight"] for i in infos} == {0.8} and {i["coact_reward"] for i in infos} == {0.0}
    # every row of a batch carries the same reward_extra_info keys, whatever made it
    assert all(set(i) == set(INFO_KEYS) for i in infos)
    chosen, rejected = pair_rows(["u"] * 4, [i["coact_pair_role"] for i in infos])
    assert (chosen, rejected) == ([0], [1])
    with pytest.raises(ValueError):
        feedback_infos(1, "edit", 1.0)
