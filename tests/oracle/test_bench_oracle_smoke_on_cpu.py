"""The oracle benchmark runs end to end (tiny load): baseline, service, open-loop target check, no overruns."""

from __future__ import annotations

import re
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
    verdicts = _verdicts(done.stdout)
    assert set(verdicts) == {"inline", "inline@2000/s"}
    for setting, (rate, p99, verdict) in verdicts.items():  # the verdict printed is the one its numbers give
        assert (rate, p99) == (float(rows[setting][1]), float(rows[setting][4]))
        assert verdict == ("met" if rate >= 2000 * 0.99 and p99 <= 20 else "NOT met"), verdicts


def _verdicts(stdout: str) -> dict[str, tuple[float, float, str]]:
    """``{setting: (req/s, p99 ms, verdict)}`` from the report's target lines, after checking the target itself."""
    head, _, lines = stdout.partition("\ntarget, ")
    assert head and lines.startswith("64 clients: >= 2000 req/s with p99 <= 20 ms"), stdout[-2000:]
    found = {}
    for line in lines.splitlines()[1:]:
        match = re.fullmatch(r"\s*(\S+): ([\d.]+) req/s, p99 ([\d.]+) ms -> (met|NOT met)", line)
        assert match, line
        found[match[1]] = (float(match[2]), float(match[3]), match[4])
    return found


def test_a_verdict_that_contradicts_its_numbers_is_caught():
    report = "x\ntarget, 64 clients: >= 2000 req/s with p99 <= 20 ms\n  inline@2000/s: 1500.0 req/s, p99 3.1 ms -> "
    assert _verdicts(report + "NOT met")["inline@2000/s"] == (1500.0, 3.1, "NOT met")
    rate, p99, verdict = _verdicts(report + "met")["inline@2000/s"]
    assert verdict != ("met" if rate >= 2000 * 0.99 and p99 <= 20 else "NOT met")  # the smoke test would fail
