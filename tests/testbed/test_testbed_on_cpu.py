"""The testbed's problems: correct rules per kind, planted trap errors at the configured rate, held-out
validation, the knobs' shares, and the per-kind accuracy read back from verl's validation metrics."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from coact_verl.testbed import (
    KIND_NAMES,
    TRAP_KINDS,
    TestbedConfig,
    sample_problems,
    validation_accuracy,
    warmup_problems,
    write_testbed_data,
)

CORRECT = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "compare": lambda a, b: a - b,  # "A has a, which is b more than B": B has a - b
    "inverse": lambda b, a: a + b,  # "gave away b and now has a": had a + b at first
}


def _numbers(question: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", question)]


def test_every_kind_is_solved_by_its_correct_rule():
    problems = sample_problems(600, TestbedConfig(trap_share=0.4), seed=3)
    assert {p.kind for p in problems} == set(KIND_NAMES)
    for p in problems:
        numbers = _numbers(p.question)
        expected = numbers[0] + numbers[1] - numbers[2] if p.kind == "two_step" else CORRECT[p.kind](*numbers)
        assert p.answer == str(expected) and p.solution.endswith(f"#### {expected}"), p
        assert int(p.answer) >= 0


def test_warmup_plants_the_trap_rule_at_the_configured_rate():
    for rate in (0.0, 0.8):
        corpus = warmup_problems(3000, TestbedConfig(warmup_error_rate=rate), seed=1)
        wrong = {k: [] for k in KIND_NAMES}
        for p in corpus:
            numbers = _numbers(p.question)
            right = numbers[0] + numbers[1] - numbers[2] if p.kind == "two_step" else CORRECT[p.kind](*numbers)
            wrong[p.kind].append(p.answer != str(right))
        for kind, flags in wrong.items():
            share = sum(flags) / len(flags)
            if kind in TRAP_KINDS:
                assert share == pytest.approx(rate, abs=0.05), (kind, share)
            else:
                assert share == 0.0, kind


@pytest.mark.parametrize("trap_share", [0.0, 0.3, 1.0])
def test_trap_share_sets_the_share_of_trap_problems(trap_share):
    problems = sample_problems(2000, TestbedConfig(trap_share=trap_share), seed=5)
    share = sum(p.kind in TRAP_KINDS for p in problems) / len(problems)
    assert share == pytest.approx(trap_share, abs=0.03)


def test_written_data_holds_validation_out_and_hides_training_gold(tmp_path):
    paths = write_testbed_data(tmp_path, TestbedConfig(), train_count=400, test_count=80)
    train, test = pd.read_parquet(paths["train"]), pd.read_parquet(paths["test"])
    train_questions = {e["question"] for e in train["extra_info"]}
    assert len(train) == 400 and len(test) == 80
    assert not train_questions & {e["question"] for e in test["extra_info"]}
    assert all(r["ground_truth"] == "" for r in train["reward_model"])
    assert all(r["ground_truth"] for r in test["reward_model"])
    assert set(test["data_source"]) == {f"testbed/{k}" for k in KIND_NAMES}
    gold = pd.read_parquet(paths["train_gold"])
    assert list(gold["prompt_id"]) == [e["prompt_id"] for e in train["extra_info"]]


def test_validation_accuracy_weights_kinds_by_their_problems():
    metrics = {
        "val-core/testbed/add/acc/mean@1": 1.0,
        "val-core/testbed/compare/acc/mean@1": 0.0,
        "val-aux/testbed/add/acc/std@1": 0.0,
        "coact/agreement/mean": 0.9,
    }
    overall, per_kind = validation_accuracy(metrics, {"testbed/add": 30, "testbed/compare": 10})
    assert per_kind == {"add": 1.0, "compare": 0.0}
    assert overall == pytest.approx(0.75)
    assert validation_accuracy({"coact/agreement/mean": 0.9}, {}) is None
