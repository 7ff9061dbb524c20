"""``coact-verl report RUN_DIR``: figures and a markdown summary of a CoAct training run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from coact_verl.report.logs import ReportInputError


def add_report_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on an ``argparse`` subparsers object; parsed args carry ``func=run_report_command``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="plot a training run's metrics (verl file-logger JSONL) into PNGs and report.md",
        description=(
            "Read every verl file-logger JSONL ({step, data} lines; trainer.logger=['console','file']) under "
            "RUN_DIR, plus label_efficiency.json at its top and eval.json files below it when present, and write "
            "accuracy, routing, budget, calibration and label-efficiency PNGs with a report.md. Figures whose "
            "metrics are missing are skipped with a note."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="folder holding the run's JSONL log(s)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/report)")
    parser.set_defaults(func=run_report_command)
    return parser


def run_report_command(args: argparse.Namespace) -> int:
    """Run ``report`` from parsed arguments. Returns the exit code (2 when RUN_DIR has no run log)."""
    from coact_verl.report.build import build_report

    try:
        result = build_report(args.run_dir, args.out)
    except (ReportInputError, OSError) as exc:
        sys.stderr.write(f"coact-verl report: error: {exc}\n")
        return 2
    for figure in result.figures:
        state = figure.file if figure.file is not None else "skipped"
        sys.stdout.write(f"{figure.title}: {state}\n")
    sys.stdout.write(f"wrote {result.markdown}\n")
    return 0
