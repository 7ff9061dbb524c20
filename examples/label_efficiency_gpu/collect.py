"""Collect the GPU study's runs into ``label_efficiency.json``, ``study.md`` and the report's plots, per dataset.

Usage: ``python collect.py OUT`` with ``OUT/runs/<dataset>/<arm>_seed<k>/metrics.jsonl`` written by run_arms.sh.
Accuracy is verl's greedy validation accuracy (``val-core/<data_source>/acc/mean@1``; GSM8K test or MATH-500),
labels used the oracle's cumulative charge; final values are mean ± std (population) over seeds.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from coact_verl.report.build import build_report
from coact_verl.report.study import STUDY_FILE

ACCURACY = re.compile(r"^val-core/.+/acc/mean@1$")
RUN_NAME = re.compile(r"^(?P<arm>\w+?)_seed(?P<seed>\d+)$")


def read_run(metrics: Path) -> list[dict]:
    """Validation points ``{"step", "labels_used", "accuracy"}`` of one run, in step order."""
    points, spent = [], 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        step, data = int(record["step"]), record["data"]
        spent = float(data.get("coact/oracle/budget_spent", spent))
        accuracy = [float(v) for k, v in data.items() if ACCURACY.match(k)]
        if accuracy:
            points.append({"step": step, "labels_used": spent if step > 0 else 0.0, "accuracy": accuracy[0]})
    return points


def collect(dataset_dir: Path) -> list[str]:
    runs = []
    for metrics in sorted(dataset_dir.glob("*/metrics.jsonl")):
        match = RUN_NAME.match(metrics.parent.name)
        points = read_run(metrics)
        if match and points:
            runs.append({"arm": match["arm"], "seed": int(match["seed"]), "points": points})
    if not runs:
        return [f"{dataset_dir.name}: no finished runs"]
    (dataset_dir / STUDY_FILE).write_text(json.dumps({"metric": "greedy validation accuracy", "runs": runs}, indent=1))
    lines = [f"## {dataset_dir.name}", "", "| arm | seeds | step 0 | final | labels used |", "|---|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        cells = [
            [r["points"][i][key] for r in mine] for i, key in ((0, "accuracy"), (-1, "accuracy"), (-1, "labels_used"))
        ]
        spread = [statistics.pstdev(c) if len(c) > 1 else 0.0 for c in cells]
        lines.append(
            f"| {arm} | {len(mine)} | {statistics.fmean(cells[0]):.3f} ± {spread[0]:.3f} "
            f"| {statistics.fmean(cells[1]):.3f} ± {spread[1]:.3f} | {statistics.fmean(cells[2]):.0f} |"
        )
    build_report(dataset_dir)
    return [*lines, "", f"Plots: `{dataset_dir / 'report'}`.", ""]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "label_efficiency_gpu_out")
    text = ["# Label efficiency (GPU)", ""]
    for dataset_dir in sorted(p for p in (out / "runs").iterdir() if p.is_dir()):
        text += collect(dataset_dir)
    (out / "study.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
