"""Offline scoring: JSONL in, per-row statistics out, through the ``score`` subcommand."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency.offline import add_score_subcommand, main, run_score_command, score_rollouts

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    {
        "id": "p0",
        "responses": ["... \\boxed{\\frac{1}{2}}", "... The answer is: 0.5", "... \\boxed{2}", "no answer"],
        "gold": "1/2",
    },
    {"id": "p1", "responses": ["\\boxed{\\sqrt{2}/2}", "\\boxed{3}", "\\boxed{3}"], "gold": "\\frac{1}{\\sqrt2}"},
    {"id": 7, "responses": ["\\boxed{x^2}"]},
]


def _write(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_score_subcommand_round_trip(tmp_path, capsys):
    src, dst = _write(tmp_path / "rollouts.jsonl", ROWS), tmp_path / "out" / "stats.jsonl"
    parser = argparse.ArgumentParser(prog="coact-verl")
    add_score_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", "--task", "math", "--in", str(src), "--out", str(dst), "--workers", "1"])
    assert args.func is run_score_command
    assert args.func(args) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3 and summary["responses"] == 8
    assert summary["rows_with_gold"] == 2 and summary["majority_accuracy"] == 0.5
    rows = _read(dst)
    assert [r["id"] for r in rows] == ["p0", "p1", 7]
    r0, r1, r2 = rows
    assert r0["majority"] == "\\frac{1}{2}" and r0["cluster_of"] == [0, 0, 1, -1]
    assert r0["rewards"] == [1.0, 1.0, 0.0, 0.0] and r0["agreement"] == 0.5
    assert r0["gold_cluster"] == 0 and r0["majority_correct"] is True
    assert r1["majority"] == "3" and r1["gold_cluster"] == 1 and r1["majority_correct"] is False
    # per response: the extracted answer and whether it matches the gold
    assert r0["answers"] == ["\\frac{1}{2}", "0.5", "2", None] and r0["gold_answer"] == "1/2"
    assert r0["gold_match"] == [True, True, False, False]
    assert r1["gold_match"] == [True, False, False]
    assert summary["response_accuracy"] == 3 / 7
    assert "majority_correct" not in r2 and "gold" not in r2
    assert r2["agreement"] == 1.0 and r2["entropy"] == 0.0


def test_same_numbers_as_the_library_path(tmp_path):
    from coact_verl.consistency import AnswerClusterer, score_groups

    src, dst = _write(tmp_path / "in.jsonl", ROWS), tmp_path / "out.jsonl"
    config = ConsistencyConfig(task="math", use_math_verify=False)
    score_rollouts(src, dst, "math", config)
    with AnswerClusterer(config) as c:
        stats = score_groups([r["responses"] for r in ROWS], "math", c)
    for row, s in zip(_read(dst), stats, strict=True):
        assert row["cluster_of"] == list(s.cluster_of) and row["entropy"] == s.entropy


def test_responses_marked_unfinished_keep_only_their_explicit_answers(tmp_path):
    cut = "We have $x = 3$, so $2x = 6$ and"
    row = {"id": 1, "responses": ["\\boxed{7}", cut, cut, "\\boxed{7} and then", cut], "gold": "7"}
    row["finished"] = [True, False, False, False, True]
    src, dst = _write(tmp_path / "in.jsonl", [row]), tmp_path / "out.jsonl"
    score_rollouts(src, dst, "math", ConsistencyConfig(use_math_verify=False))
    (out,) = _read(dst)
    assert out["answers"] == ["7", None, None, "7", "2x = 6"]
    assert out["majority"] == "7" and out["gold_match"] == [True, False, False, True, False]


def test_malformed_json_names_the_line_and_leaves_no_output(tmp_path, capsys):
    src = _write(tmp_path / "bad.jsonl", ROWS[:2], ('{"id": 3, "responses": ["x"]\n',))
    dst = tmp_path / "out.jsonl"
    dst.write_text("previous results\n", encoding="utf-8")
    code = main(["score", "--task", "math", "--in", str(src), "--out", str(dst), "--no-math-verify"])
    assert code == 2
    assert "bad.jsonl:3: invalid JSON" in capsys.readouterr().err
    assert dst.read_text(encoding="utf-8") == "previous results\n"  # untouched, not half-written
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"id": 1}', "'responses' must be a non-empty list"),
        ('{"id": 1, "responses": []}', "'responses' must be a non-empty list"),
        ('{"id": 1, "responses": ["a", 3]}', "responses\\[1\\] is int"),
        ('{"id": 1, "responses": ["a"], "gold": {"x": 1}}', "'gold' must be"),
        ('{"id": 1, "responses": ["a", "b"], "finished": [true]}', "'finished' must be a list of 2 booleans"),
        ('{"id": 1, "responses": ["a"], "finished": [1]}', "'finished' must be a list of 1 booleans"),
    ],
)
def test_invalid_rows_are_rejected_with_their_line(tmp_path, line, message):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[2]) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"in.jsonl:3: {message}"):
        score_rollouts(src, tmp_path / "out.jsonl", "math", ConsistencyConfig(use_math_verify=False))
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_input_and_bad_task(tmp_path):
    with pytest.raises(FileNotFoundError):
        score_rollouts(tmp_path / "nope.jsonl", tmp_path / "out.jsonl", "math")
    with pytest.raises(ValueError, match="task"):
        score_rollouts(tmp_path / "nope.jsonl", tmp_path / "out.jsonl", "biology")


def test_module_entry_point_in_a_fresh_interpreter(tmp_path, reference_data):
    gsm = reference_data("gsm8k/test.jsonl")[:5]
    rows = [
        {
            "id": i,
            "responses": [r["answer"], r["answer"].replace("####", "#### 1"), "no"],
            "gold": r["answer"].rsplit("####", 1)[1].strip(),
        }
        for i, r in enumerate(gsm)
    ]
    src, dst = _write(tmp_path / "gsm.jsonl", rows), tmp_path / "gsm_out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "coact_verl.consistency.offline", "score", "--task", "gsm8k"]
    proc = subprocess.run(
        [*cmd, "--in", str(src), "--out", str(dst), "--no-math-verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 5
    out = _read(dst)
    assert all(r["cluster_sizes"] == [1, 1] and r["n"] == 3 for r in out)
    assert all(r["majority_correct"] for r in out)  # a 1-1 tie goes to the first (the gold) answer
