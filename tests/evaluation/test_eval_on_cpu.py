"""``coact-verl eval``: pass@k / maj@n arithmetic, prompts identical to ``prepare``'s, and a real run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from coact_verl.cli import build_parser
from coact_verl.config import ConsistencyConfig
from coact_verl.consistency import AnswerClusterer
from coact_verl.data.prepare import prepare
from coact_verl.evaluation.generate import left_pad
from coact_verl.evaluation.metrics import pass_at_k, score_samples, summarize
from coact_verl.evaluation.problems import EvalProblem, load_problems
from coact_verl.evaluation.run import problem_row


def test_eval_and_report_are_subcommands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"eval", "report"} <= set(choices)


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 2, 1) == 0.5
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(3, 1, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_gsm8k_scores_with_number_equivalence():
    samples = [
        ["so #### 4", "The answer is 4.", "#### 5"],
        ["#### 1/2", "#### 0.5", "#### 3", "no idea"],
        ["#### 7", "#### 8"],
    ]
    with AnswerClusterer(ConsistencyConfig(task="gsm8k", use_math_verify=False)) as clusterer:
        scores = score_samples(samples, ["4", "0.50", "9"], "gsm8k", clusterer)
    assert [s.correct for s in scores] == [[True, True, False], [True, True, False, False], [False, False]]
    assert [s.majority_correct for s in scores] == [True, True, False]
    assert scores[2].gold_cluster == -1


def test_math_scores_with_latex_equivalence():
    samples = [
        ["\\boxed{0.5}", "so \\boxed{\\frac12}", "\\boxed{\\dfrac{1}{2}}", "\\boxed{2}"],
        ["\\boxed{\\frac{\\sqrt{2}}{2}}", "\\boxed{\\sqrt{2}/2}", "\\boxed{1}"],
        ["\\boxed{1}", "\\boxed{2}"],  # a tie: the first-seen cluster is the majority
    ]
    with AnswerClusterer(ConsistencyConfig(task="math", verify_timeout_s=20.0)) as clusterer:
        scores = score_samples(samples, ["\\frac{1}{2}", "\\frac{1}{\\sqrt{2}}", "2"], "math", clusterer)
    assert [s.correct for s in scores] == [[True, True, True, False], [True, True, False], [False, True]]
    assert [s.majority_correct for s in scores] == [True, True, False]
    rows = [
        {
            "n": s.stats.n,
            "correct": s.correct,
            "majority_correct": s.majority_correct,
            "answers": s.stats.answers,
            "agreement": s.stats.agreement,
        }
        for s in scores
    ]
    summary = summarize(rows)
    assert summary["pass@1"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 2) / 3)
    assert summary["maj@n"] == pytest.approx(2 / 3) and summary["pass@n"] == 1.0
    assert (summary["correct_samples"], summary["samples"], summary["majority_correct"]) == (6, 9, 2)


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids == [[5, 6, 7], [0, 0, 9]] and mask == [[1, 1, 1], [0, 0, 1]]


def test_prompts_match_prepare(shared_data, tmp_path):
    paths = prepare("gsm8k", str(shared_data / "gsm8k"), tmp_path, max_train=3)
    raw = load_problems("gsm8k", str(shared_data / "gsm8k"), limit=4)
    from_test = load_problems("gsm8k", str(paths["test"]), limit=4)
    from_train = load_problems("gsm8k", str(paths["train"]))  # gold only in train_gold.parquet
    test_rows = pd.read_parquet(paths["test"]).head(4)
    assert [list(p.messages) for p in raw] == [list(m) for m in test_rows["prompt"]]
    assert raw == from_test
    gold = pd.read_parquet(paths["train_gold"])
    assert [p.gold for p in from_train] == list(gold["answer"]) and len(from_train) == 3
    assert raw[0].gold == "18" and raw[0].messages[0]["content"].endswith('output the final answer after "####".')


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "coact-verl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "coact_verl.cli"]


def test_eval_command_on_tiny_model(shared_data, tmp_path):
    from coact_verl.data.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model), "--dataset", "gsm8k", "--src", str(shared_data / "gsm8k")]
    args += ["--n", "2", "--limit", "4", "--max-new-tokens", "16", "--batch-size", "4", "--out", str(out)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(_console_script() + args, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "eval.md").read_text().count("| gsm8k | 4 | 2 |") == 1
    report = json.loads((out / "eval.json").read_text())
    summary, rows = report["summary"], report["rows"]
    assert len(rows) == 4 and all(len(r["responses"]) == 2 == len(r["correct"]) for r in rows)
    assert [r["gold"] for r in rows] == ["18", "3", "70000", "540"]
    # every number of the summary follows from the per-problem rows
    for r in rows:
        assert r["correct"] == [r["gold_cluster"] >= 0 and c == r["gold_cluster"] for c in r["cluster_of"]]
        assert r["num_correct"] == sum(r["correct"]) and r["majority_correct"] == (r["gold_cluster"] == 0)
    assert summary["pass@1"] == pytest.approx(sum(sum(r["correct"]) / 2 for r in rows) / 4)
    assert summary["maj@n"] == pytest.approx(sum(r["majority_correct"] for r in rows) / 4)
    assert summary["pass@n"] == pytest.approx(sum(any(r["correct"]) for r in rows) / 4)
    assert summary["correct_samples"] == sum(r["num_correct"] for r in rows) and summary["samples"] == 8
    assert summary["problems"] == 4 and summary["n"] == 2 and summary["backend"] == "hf"
    assert json.loads(run.stdout[: run.stdout.rindex("}") + 1])["pass@1"] == summary["pass@1"]


def test_eval_command_rejects_a_missing_parquet(tmp_path, capsys):
    from coact_verl.cli import main

    code = main(["eval", "--model", "x", "--dataset", "math500", "--src", str(tmp_path / "none.parquet")])
    assert code == 2 and "parquet not found" in capsys.readouterr().err


def test_problem_row_is_json_ready():
    with AnswerClusterer(ConsistencyConfig(task="gsm8k", use_math_verify=False)) as clusterer:
        (score,) = score_samples([["#### 3", "#### 3"]], ["3"], "gsm8k", clusterer)
    problem = EvalProblem(0, "abc", "q?", ({"role": "user", "content": "q?"},), "3")
    row = json.loads(json.dumps(problem_row(problem, ["#### 3", "#### 3"], score)))
    assert row["correct"] == [True, True] and row["agreement"] == 1.0 and row["majority"] == "3"
