"""``coact-verl report``: figures from verl file-logger JSONL with CoAct's real metric keys, graceful skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.cli import main
from coact_verl.report import find_run_logs, keys
from coact_verl.report.calibration import calibration_points
from coact_verl.report.study import StudyRun, arm_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = ("accuracy.png", "routing.png", "budget.png", "calibration_steps.png", "label_efficiency.png")


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _coact_run(steps: int = 6) -> list[dict]:
    """Lines as verl's file logger writes them: validation before training, then one line per step."""
    val = "val-core/openai/gsm8k/acc/mean@4"
    maj = "val-core/openai/gsm8k/acc/maj@4/mean"
    records = [{"step": 0, "data": {val: 0.20, maj: 0.25, "val-aux/openai/gsm8k/acc/std@4": 0.1}}]
    for step in range(1, steps + 1):
        agreement = 0.3 + 0.05 * step
        data = {
            "training/global_step": step,
            "critic/score/mean": agreement,
            keys.AGREEMENT_MEAN: agreement,
            "coact/agreement/hist_le_0.5": 0.4,
            keys.ROUTE_FRACTIONS["self"]: agreement,
            keys.ROUTE_FRACTIONS["oracle"]: 0.2,
            keys.ROUTE_FRACTIONS["drop"]: 0.8 - agreement,
            keys.BUDGET_SPENT: 8 * step,
            keys.BUDGET_TOTAL: 64,
            "coact/oracle/budget_remaining": 64 - 8 * step,
            keys.SELF_LABEL_PRECISION: min(1.0, agreement + 0.1),
            keys.ORACLE_LABEL_ACCURACY: 1.0,
            keys.TRAIN_GOLD_ACCURACY: agreement - 0.1,
            "gen/admission_rate": 0.5,
            "pool/size": 100 + step,
            "actor/grad_norm": float("nan"),  # orjson writes null: dropped
        }
        if step == steps:
            data.update({val: 0.4, maj: 0.45})
        records.append({"step": step, "data": data})
    return records


def _study() -> dict:
    runs = []
    for arm, slope in (("coact", 0.002), ("oracle-only", 0.001)):
        for seed in range(3):
            accuracy = [0.3 + slope * 50 * i + 0.01 * seed for i in range(5)]
            points = [{"step": 10 * i, "labels_used": 50 * i, "accuracy": a} for i, a in enumerate(accuracy)]
            runs.append({"arm": arm, "seed": seed, "points": points})
    return {"metric": "val-core/openai/gsm8k/acc/mean@4", "runs": runs}


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


def test_full_report(tmp_path):
    run_dir = tmp_path / "run"
    _write_jsonl(run_dir / "coact" / "gsm8k_grpo.jsonl", _coact_run())
    (run_dir / "label_efficiency.json").write_text(json.dumps(_study()))
    rows = [{"agreement": a, "majority_correct": c} for a, c in [(1.0, True), (0.5, False), (0.5, True)]]
    (run_dir / "eval_step6").mkdir()
    (run_dir / "eval_step6" / "eval.json").write_text(json.dumps({"summary": {}, "rows": rows}))
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    for name in (*ALL_FIGURES, "calibration_eval.png"):
        _assert_png(out / name)
        assert f"]({name})" in markdown
    assert "Skipped" not in markdown
    assert "| coact/gsm8k_grpo | 7 (0–6) | openai/gsm8k mean@4 | 0.400 | 0.400 | 0.600 |" in markdown
    assert "| coact | 3 | 200 | 0.710 ± 0.008 |" in markdown  # 0.3 + 0.002 * 200 + mean seed offset 0.01
    assert "not a per-prompt calibration curve" in markdown


def test_missing_metrics_are_skipped_with_notes(tmp_path):
    run_dir = tmp_path / "run"
    _write_jsonl(run_dir / "plain.jsonl", [{"step": s, "data": {"critic/score/mean": 0.1 * s}} for s in range(1, 4)])
    _write_jsonl(run_dir / "rollouts.jsonl", [{"id": 1, "responses": ["#### 4"]}])  # another kind of JSONL
    (run_dir / "label_efficiency.json").write_text(json.dumps({"runs": [{"arm": "a", "points": "oops"}]}))
    assert main(["report", str(run_dir)]) == 0
    out = run_dir / "report"
    markdown = (out / "report.md").read_text()
    assert not list(out.glob("*.png"))
    assert markdown.count("Skipped") == 6
    assert "`rollouts.jsonl` skipped" in markdown and "`label_efficiency.json` ignored" in markdown
    assert "| plain | 3 (1–3) | – |" in markdown


def test_partial_metrics_draw_what_exists(tmp_path):
    records = [{"step": s, "data": {keys.ROUTE_FRACTIONS["self"]: 0.5}} for s in range(1, 4)]
    log = _write_jsonl(tmp_path / "run.jsonl", records)
    log.write_text(log.read_text() + '{"step": 4, "da')  # a run still being written
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png")) == ["routing.png"]
    assert "1 unreadable line(s) skipped" in (tmp_path / "r" / "report.md").read_text()
    (run,) = find_run_logs(tmp_path)[0]
    assert run.series(keys.ROUTE_FRACTIONS["self"]) == ([1, 2, 3], [0.5, 0.5, 0.5])


@pytest.mark.parametrize("content", [None, '{"id": 1}\n'])
def test_no_run_log_exits_2(tmp_path, content):
    if content is not None:
        (tmp_path / "other.jsonl").write_text(content)
    run = subprocess.run(
        [sys.executable, "-m", "coact_verl.cli", "report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    assert "file-logger" in run.stderr and not (tmp_path / "report").exists()


def test_validation_keys_follow_verl_naming():
    logged = ["val-core/coact/arithmetic/acc/maj@4/mean", "val-core/coact/arithmetic/acc/mean@4", "val-aux/x/acc/std@4"]
    assert keys.validation_keys(logged) == logged[1::-1]
    assert keys.short_validation_name(logged[0]) == "coact/arithmetic maj@4"


def test_label_efficiency_mean_and_std_over_seeds():
    runs = [StudyRun("a", 0, (0, 10), (0.2, 0.4)), StudyRun("a", 1, (0, 5, 20), (0.4, 0.5, 0.6))]
    (curve,) = arm_curves(runs)
    assert curve.labels_used == (0, 5, 10) and curve.seeds == 2
    assert curve.mean == pytest.approx((0.3, 0.4, 0.46667), abs=1e-4)  # seed 1 at 10: 0.5 + 0.1 * 5/15
    assert curve.std == pytest.approx((0.1, 0.1, 0.06667), abs=1e-4)


def test_calibration_points_group_by_agreement():
    points = calibration_points([1.0, 0.5, 0.5, 1.0, 0.25], [True, False, True, True, False])
    assert [(p.agreement, p.count, p.accuracy) for p in points] == [(0.25, 1, 0.0), (0.5, 2, 0.5), (1.0, 2, 1.0)]


def test_per_kind_accuracy_of_a_study_is_drawn(tmp_path):
    from coact_verl.report.study import final_kind_accuracy

    _write_jsonl(tmp_path / "run" / "metrics.jsonl", _coact_run(2))
    runs = []
    for arm, trap in (("full_gold", [0.9, 0.7]), ("self_only", [0.0, 0.0])):
        for seed, final in enumerate(trap):
            points = [
                {"step": 0, "labels_used": 0, "accuracy": 0.5, "per_kind": {"add": 1.0, "compare": 0.0}},
                {"step": 4, "labels_used": 32 * seed, "accuracy": 0.6, "per_kind": {"add": 1.0, "compare": final}},
            ]
            runs.append({"arm": arm, "seed": seed, "points": points})
    (tmp_path / "label_efficiency.json").write_text(json.dumps({"runs": runs}))
    cells = {(c.arm, c.kind): c for c in final_kind_accuracy(tmp_path / "label_efficiency.json")}
    assert cells[("full_gold", "compare")].mean == pytest.approx(0.8)
    assert cells[("full_gold", "compare")].std == pytest.approx(0.1)
    assert cells[("self_only", "add")].seeds == 2
    assert main(["report", str(tmp_path)]) == 0
    _assert_png(tmp_path / "report" / "label_efficiency_kinds.png")
    assert "](label_efficiency_kinds.png)" in (tmp_path / "report" / "report.md").read_text()


def test_generation_dumps_get_one_note_and_evaluations_are_named(tmp_path):
    """A demo-like run folder: verl's rollout/validation dumps beside the metrics, two eval.json files."""
    _write_jsonl(tmp_path / "metrics.jsonl", _coact_run(2))
    dump = [{"input": "user\n1+1?", "output": "#### 2", "gts": "", "score": 1.0, "step": 1, "uid": "a_0_0"}]
    for name in ("rollouts/1.jsonl", "rollouts/2.jsonl", "validation/0.jsonl"):
        _write_jsonl(tmp_path / name, dump)
    for name, count in (("eval_before", 3), ("eval_after", 2)):
        rows = [{"agreement": 1.0, "majority_correct": True}] * count
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps({"rows": rows}))
    assert main(["report", str(tmp_path)]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "- verl generation dumps (responses, not metrics) not read: `rollouts/` (2), `validation/` (1)" in markdown
    assert "skipped" not in markdown
    assert "Drawn: `eval_after` (2 problems), `eval_before` (3 problems)." in markdown
