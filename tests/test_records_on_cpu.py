"""The two verl contracts (dataset row, per-response info), the task table and the state-file writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coact_verl.data.prepare import to_verl_rows
from coact_verl.feedback.queue import feedback_row
from coact_verl.pool import PromptPool, to_verl_row
from coact_verl.records import INFO_KEYS, VALIDATE_KEY, FeedbackPair, PromptRow, ResponseInfo
from coact_verl.state_file import read_json, write_json_atomic
from coact_verl.tasks import TASK_INSTRUCTIONS, TASKS, prompt_id, prompt_text, task


def _rows() -> dict[str, dict]:
    dataset, _ = to_verl_rows("gsm8k", [{"question": "Q?", "solution": "1 + 1 = 2\n#### 2"}], "train", False)
    evaluation, _ = to_verl_rows("math500", [{"question": "R?", "solution": "\\boxed{3}"}], "test", True)
    pool = PromptPool()
    pool.add("S?", "math", "oracle", label="5")
    pair = {"id": 4, "kind": "edit", "prompt_id": "p4", "prompt": "T?", "task": "gsm8k", "chosen": "a"}
    return {
        "dataset": dataset[0],
        "evaluation": evaluation[0],
        "pool": to_verl_row(next(iter(pool))),
        "feedback": feedback_row(pair | {"rejected": "b", "weight": 0.5}),
    }


@pytest.mark.parametrize("kind", ["dataset", "evaluation", "pool", "feedback"])
def test_every_row_builder_writes_rows_that_read_back_unchanged(kind):
    row = _rows()[kind]
    assert PromptRow.from_row(row).to_row() == row
    assert PromptRow.from_row(json.loads(json.dumps(row))).to_row() == row  # parquet/JSON-shaped values too


def test_rows_carry_what_their_readers_need():
    rows = {kind: PromptRow.from_row(row) for kind, row in _rows().items()}
    assert rows["dataset"].user_turn == f"Q? {TASK_INSTRUCTIONS['gsm8k']}" and rows["dataset"].ground_truth == ""
    assert rows["dataset"].prompt_id == prompt_id("openai/gsm8k", "Q?") and "coact_label" not in _rows()["dataset"]
    assert rows["evaluation"].is_validation and rows["evaluation"].ground_truth == "3"
    assert rows["pool"].given_label == ("5", "oracle") and rows["pool"].split == "pool"
    assert rows["feedback"].feedback == FeedbackPair("edit", "a", "b", 0.5) and rows["feedback"].user_turn == "T?"
    assert rows["feedback"].given_label == (None, "none")


def test_a_stock_verl_row_and_agent_loop_kwargs_read_with_defaults():
    messages = np.array([{"role": "system", "content": "s"}, {"role": "user", "content": "U?"}], dtype=object)
    row = PromptRow.from_row({"raw_prompt": messages, "extra_info": {"index": 3}, "uid": "x"})
    assert (row.prompt_id, row.task, row.question, row.index, row.given_label) == ("", "", "U?", 3, (None, "none"))
    assert not row.is_validation and PromptRow.from_row({"extra_info": {VALIDATE_KEY: True}}).is_validation
    assert PromptRow.from_row({}).question == ""


def test_response_info_round_trips_and_reads_loosely_typed_values():
    info = ResponseInfo(prompt_id="p", agreement=0.75, route="self", label="4", label_cluster=0, reward=1.0)
    assert set(info.to_extra_info()) == set(INFO_KEYS) and ResponseInfo.from_extra_info(info.to_extra_info()) == info
    raw = {
        "coact_label_cluster": np.int64(2),
        "coact_reward": "1.0",
        "coact_pair_weight": np.float32(0.5),
        "coact_group_complete": np.float64(0.0),
        "coact_gate_wait_s": 1,
        "coact_label": None,
    }
    read = ResponseInfo.from_extra_info(raw)
    assert (read.label_cluster, read.reward, read.pair_weight, read.label) == (2, 1.0, 0.5, "")
    assert read.group_complete is False and read.gate_wait_s == 1.0
    assert type(read.label_cluster) is int and type(read.reward) is float
    extra = read.to_extra_info()
    assert extra["coact_group_complete"] == 0.0 and set(extra) == set(INFO_KEYS) | {
        "coact_group_complete",
        "coact_gate_wait_s",
    }
    assert (
        ResponseInfo.is_coact(extra) and not ResponseInfo.is_coact({"score": 1.0}) and not ResponseInfo.is_coact(None)
    )
    assert ResponseInfo.key("pair_role") == "coact_pair_role"
    with pytest.raises(KeyError):
        ResponseInfo.key("pair")
    incomplete = ResponseInfo.incomplete("p")
    assert (incomplete.route, incomplete.route_reason, incomplete.reward, incomplete.pair_role) == (
        "incomplete",
        "gate_timeout",
        0.0,
        "",
    )


def test_task_table():
    assert TASKS == ("gsm8k", "math", "numeric")
    assert prompt_text("Q?", "math") == "Q? " + task("math").instruction
    assert prompt_id("openai/gsm8k", "Q?") == prompt_id("openai/gsm8k", "Q?") != prompt_id("other", "Q?")
    assert len(prompt_id("a", "b")) == 16 and "_" not in prompt_id("a", "b")
    with pytest.raises(ValueError, match="task must be one of"):
        task("chess")


def test_state_file_round_trip_leaves_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "deep" / "state.json", {"a": [1, "é"]})
    assert read_json(path) == {"a": [1, "é"]} and [p.name for p in path.parent.iterdir()] == ["state.json"]
