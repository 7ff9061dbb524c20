"""``coact-verl prepare`` on the real GSM8K / MATH-500 / OCW files: verl's schema, gold kept aside."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from coact_verl.data.prepare import final_answer, prepare
from coact_verl.tasks import prompt_id


@pytest.mark.parametrize(
    ("dataset", "folder", "gold_example"),
    [("gsm8k", "gsm8k", None), ("math500", "math500", None), ("ocw", "minerva_math", None)],
)
def test_prepare_writes_verl_schema_without_gold_in_training_rows(shared_data, tmp_path, dataset, folder, gold_example):
    src = shared_data / folder
    if dataset != "gsm8k":
        src = src / "test.jsonl"
    paths = prepare(dataset, str(src), tmp_path, max_train=200)
    train, gold = pd.read_parquet(paths["train"]), pd.read_parquet(paths["train_gold"])
    test = pd.read_parquet(paths["test"])
    assert list(train.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert 0 < len(train) <= 200 and len(gold) == len(train) and len(test) > 0
    row = train.iloc[0]
    assert row["prompt"][0]["role"] == "user" and row["extra_info"]["question"] in row["prompt"][0]["content"]
    # the training file carries no gold answer anywhere
    assert all(rm["ground_truth"] == "" for rm in train["reward_model"])
    golds = set(gold["answer"])
    for record in train.to_dict("records"):
        flat = str(record)
        assert not any(f"'{g}'" in flat for g in golds if len(g) > 3)
    # the gold file is keyed by the prompt id that the training rows carry
    assert list(gold["prompt_id"]) == [e["prompt_id"] for e in train["extra_info"]]
    assert "_" not in "".join(gold["prompt_id"])  # verl splits keys on "_"
    # evaluation rows keep their ground truth for verl's validation
    assert all(rm["ground_truth"] for rm in test["reward_model"])


def test_final_answers_of_real_solutions(shared_data):
    import json

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").open()][:50]
    answers = [final_answer(r["answer"], "gsm8k") for r in rows]
    assert all(a and "," not in a for a in answers)
    assert final_answer("so \\boxed{\\frac{1}{2}} done", "math") == "\\frac{1}{2}"
    assert prompt_id("a", "q") == prompt_id("a", "q") != prompt_id("a", "q2")


def test_cli_prepare_and_bad_input(shared_data, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "coact_verl.cli", "prepare", "--dataset", "gsm8k", "--src", str(shared_data / "gsm8k"),
         "--out", str(out), "--max-train", "10"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(out / "train.parquet")) == 10
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2: invalid JSON"):
        prepare("gsm8k", str(broken), tmp_path / "x")
    assert not (tmp_path / "x" / "train.parquet").exists()
