"""``coact-verl demo`` exactly as the README runs it (``make demo``): the console script, no arguments, from a
fresh folder. Its story: per training step the labels spent, the routes and self-label precision by agreement
band; accuracy per kind before and after; a summary; the report's figures in ``demo_run/report/``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.demo import BANDS, DEMO_BATCH, DEMO_ORACLE_SHARE, DEMO_STEPS, DEMO_VALIDATION, band_precision
from coact_verl.testbed import KIND_NAMES, TRAP_KINDS

pytestmark = pytest.mark.e2e
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BAND_CELL = re.compile(r"^(?:-|(\d\.\d\d) \((\d+)\))$")
ACCURACY_LINE = re.compile(r"^  (\w+)( \(trap\))?\s+(\d\.\d\d) -> (\d\.\d\d)$")


def _run_documented_demo(cwd: Path) -> str:
    """``coact-verl demo`` from the venv's console script in ``cwd``; returns its stdout (printed, so that a
    failing assertion shows the whole story in pytest's captured output)."""
    script = shutil.which("coact-verl", path=str(Path(sys.executable).parent))
    assert script, f"no coact-verl console script next to {sys.executable}: install the package (make setup)"
    try:
        done = subprocess.run([script, "demo"], cwd=cwd, capture_output=True, text=True, timeout=840)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"coact-verl demo ran past 840 s; its output so far:\n{partial}")
    print(done.stdout)
    print(done.stderr[-5000:], file=sys.stderr)
    assert done.returncode == 0, f"coact-verl demo exited {done.returncode}"
    return done.stdout


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.split("|")]


def _first_line(lines: list[str], prefix: str) -> int:
    found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert found, f"no line starting with {prefix!r}"
    return found[0]


def test_make_demo_tells_the_story_and_writes_its_report(tmp_path):
    out = _run_documented_demo(tmp_path)
    workdir = tmp_path / "demo_run"  # the documented output folder, relative to where the command runs
    lines = out.splitlines()

    # per training step: labels spent (total), routes, wrong majorities, precision in each agreement band
    header = _first_line(lines, "step | labels (total)")
    assert _cells(lines[header])[4].split() == [label for label, _ in BANDS]
    rows = [_cells(line) for line in lines[header + 1 : header + 2 + DEMO_STEPS]]
    assert [row[0] for row in rows] == [*map(str, range(1, DEMO_STEPS + 1)), "all"], lines[header:]
    step_labels, totals = [], []
    for row in rows[:-1]:
        labels = re.fullmatch(r"(\d+) \(\s*(\d+)\)", row[1])
        assert labels, row
        spent, total = labels.groups()
        step_labels.append(int(spent))
        totals.append(int(total))
        assert sum(map(float, row[2].split(" / "))) == pytest.approx(1.0, abs=0.016), row
        assert int(spent) <= math.ceil(DEMO_ORACLE_SHARE * DEMO_BATCH), row  # the per-step budget
    assert totals == [sum(step_labels[: i + 1]) for i in range(DEMO_STEPS)]
    assert int(rows[-1][1]) == totals[-1] > 0
    for row in rows:
        cells = re.split(r"\s{2,}", row[4])
        assert len(cells) == len(BANDS) and all(BAND_CELL.match(cell) for cell in cells), row
        assert sum(int(m.group(2) or 0) for m in map(BAND_CELL.match, cells)) == (
            DEMO_BATCH * (DEMO_STEPS if row[0] == "all" else 1)
        ), row  # every prompt of the step falls in one band

    # the labels spent are the oracle's own count, within the 20% budget
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    spent = [m["data"]["coact/oracle/budget_spent"] for m in metrics if "coact/oracle/budget_spent" in m["data"]]
    assert spent[-1] == totals[-1] <= DEMO_ORACLE_SHARE * DEMO_BATCH * DEMO_STEPS + DEMO_STEPS

    # accuracy per kind before -> after, the trap kinds marked
    accuracy = {m.group(1): m for m in map(ACCURACY_LINE.match, lines) if m}
    assert set(accuracy) == {*KIND_NAMES, "all"}, accuracy
    assert {kind for kind, m in accuracy.items() if m.group(2)} == set(TRAP_KINDS)

    # before training, agreement predicts correctness; the trap kinds are confidently wrong
    before = json.loads((workdir / "eval_before" / "eval.json").read_text())["rows"]
    unanimous = band_precision(before)["=1"][1]
    split = [r["majority_correct"] for r in before if r["agreement"] < 1.0]
    assert unanimous >= 0.8 and sum(split) / len(split) <= unanimous - 0.25, (unanimous, sum(split) / len(split))
    traps = [r for r in before if r["kind"] in TRAP_KINDS]
    assert sum(r["agreement"] for r in traps) / len(traps) >= 0.6
    assert sum(r["majority_correct"] for r in traps) / len(traps) <= 0.3
    summary = " ".join(lines[_first_line(lines, "Summary:") :])
    assert f"used {totals[-1]} oracle labels" in summary
    assert "Before training, agreement predicted correctness" in summary
    assert f"{unanimous:.0%} of {band_precision(before)['=1'][0]} when unanimous" in summary

    # the report: its figures in demo_run/report/, named on the last line
    report = workdir / "report"
    assert lines[-1].startswith(f"Report: {report / 'report.md'}"), lines[-1]
    for name in ("accuracy.png", "routing.png", "calibration_eval.png", "calibration_steps.png"):
        data = (report / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
        assert name in lines[-1]
    markdown = (report / "report.md").read_text()
    for evaluation in ("eval_before", "eval_after"):  # the calibration figure names what it drew
        assert f"`{evaluation}` ({DEMO_VALIDATION} problems)" in markdown
