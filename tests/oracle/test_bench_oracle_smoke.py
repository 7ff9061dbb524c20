"""The oracle benchmark runs end to end (tiny load): baseline, service, open-loop target check, no overruns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_oracle.py"


def test_bench_oracle_runs_and_reports_the_target():
    cmd = [sys.executable, str(BENCH), "--settings", "floor", "inline", "--requests", "400", "--warmup", "50"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("\nsetting")[1]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert set(rows) >= {"floor", "inline", "inline@2000/s", "target,"}
    assert rows["floor"][2] == "1.00" and float(rows["inline"][2]) > 0  # throughput as a share of the baseline
    assert rows["inline"][5] == rows["inline"][6] == "320" and rows["inline"][7] == "0"  # labeled = budget, overruns
    assert "inline@2000/s: " in done.stdout and ("-> met" in done.stdout or "-> NOT met" in done.stdout)
