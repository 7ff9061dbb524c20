"""The label-efficiency study runs end to end from its one command (one arm, one seed, two steps here, a
briefly warmed-up testbed model: the plumbing, not the learning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.testbed import KIND_NAMES, TRAP_KINDS

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "label_efficiency" / "run_study.py"


def test_study_writes_its_table_and_plots(tmp_path):
    out = tmp_path / "study"
    args = ["--out", str(out), "--seeds", "1", "--steps", "2", "--test-freq", "2", "--arms", "coact_20"]
    args += ["--batch-size", "16", "--warmup-steps", "60"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = json.loads((out / "label_efficiency.json").read_text())
    (run,) = study["runs"]
    assert run["arm"] == "coact_20" and [p["step"] for p in run["points"]] == [0, 2]
    assert run["points"][0]["labels_used"] == 0 and run["points"][1]["labels_used"] > 0  # the oracle was paid
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in run["points"])
    kinds = set(KIND_NAMES)
    assert all(set(p["per_kind"]) == kinds for p in run["points"])  # accuracy of every kind, held out
    study_md = (out / "study.md").read_text()
    assert "| coact_20 | 1 |" in study_md and "| coact_20 (final) |" in study_md
    assert all(f"{k} (trap)" in study_md for k in TRAP_KINDS)
    png = out / "report" / "label_efficiency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "label_efficiency.png" in (out / "report" / "report.md").read_text()
