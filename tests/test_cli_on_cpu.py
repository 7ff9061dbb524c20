"""The ``coact-verl`` command line: every subcommand is reachable, and ``score`` runs end to end."""

from __future__ import annotations

import json

from coact_verl.cli import build_parser, main


def test_subcommands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"prepare", "demo", "config-dir", "score", "oracle"} <= set(choices)


def test_score_saved_rollouts(tmp_path, capsys):
    rollouts = tmp_path / "rollouts.jsonl"
    rows = [
        {"id": "a", "responses": ["so #### 4", "it is 4", "#### 5", "The answer is 4."], "gold": "4"},
        {"id": "b", "responses": ["#### 1/2", "#### 0.5", "#### 0.25", ""]},
    ]
    rollouts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "stats.jsonl"
    assert main(["score", "--task", "gsm8k", "--in", str(rollouts), "--out", str(out)]) == 0
    stats = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["id"] for s in stats] == ["a", "b"]
    assert stats[0]["agreement"] == 0.75 and stats[0]["majority_correct"] is True
    assert stats[1]["agreement"] == 0.5  # 1/2 and 0.5 are one cluster
    assert "majority_correct" not in stats[1] or stats[1]["majority_correct"] is None


def test_demo_refuses_zero_steps_before_building_anything(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "coact_verl.cli", "demo", "--steps", "0", "--workdir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--steps: must be at least 1, got 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
