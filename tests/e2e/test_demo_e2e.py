"""``coact-verl demo`` as a newcomer runs it: the testbed in miniature through verl's trainer on CPU, a per-step
story, before/after accuracy, a readable summary and the report's figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coact_verl.demo import DEMO_BATCH, band_precision
from coact_verl.testbed import TRAP_KINDS

pytestmark = pytest.mark.e2e
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_tells_the_story_and_writes_its_report(tmp_path):
    workdir = tmp_path / "demo_run"
    steps = 3
    done = subprocess.run(
        [sys.executable, "-m", "coact_verl.cli", "demo", "--workdir", str(workdir), "--steps", str(steps)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    step_lines = [line for line in out.splitlines() if line.split("|")[0].strip().isdigit()]
    assert [int(line.split("|")[0]) for line in step_lines] == list(range(1, steps + 1))
    assert all("=1:" in line or "0.75-1:" in line for line in step_lines)  # precision by agreement band
    assert "Summary:" in out and "oracle labels" in out
    for kind in TRAP_KINDS:
        assert f"{kind} (trap)" in out  # accuracy before -> after, per kind

    # the budget: labels were spent, and no more than the 20% share of the groups seen
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    spent = [m["data"]["coact/oracle/budget_spent"] for m in metrics if "coact/oracle/budget_spent" in m["data"]]
    assert spent and 0 < spent[-1] <= 0.2 * DEMO_BATCH * steps + steps

    # before training, agreement predicts correctness, except on the trap kinds: confident and wrong
    rows = json.loads((workdir / "eval_before" / "eval.json").read_text())["rows"]
    unanimous = band_precision(rows)["=1"][1]
    split = [r["majority_correct"] for r in rows if r["agreement"] < 1.0]
    assert unanimous >= 0.8 and sum(split) / len(split) <= unanimous - 0.3, (unanimous, sum(split) / len(split))
    traps = [r for r in rows if r["kind"] in TRAP_KINDS]
    assert sum(r["agreement"] for r in traps) / len(traps) >= 0.6
    assert sum(r["majority_correct"] for r in traps) / len(traps) <= 0.3

    report = workdir / "report"
    for name in ("accuracy.png", "routing.png", "calibration_eval.png", "calibration_steps.png"):
        data = (report / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    assert "eval_before" in (report / "report.md").read_text()
