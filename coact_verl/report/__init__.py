"""Reports on CoAct training runs: verl file-logger metrics (and optional study/eval files) to PNGs + markdown.

Typical use::

    from coact_verl.report import build_report

    result = build_report(Path("runs/gsm8k"))        # writes runs/gsm8k/report/{report.md, *.png}

The ``report`` subcommand (:mod:`coact_verl.report.cli`) wraps :func:`build_report`.
"""

from coact_verl.report.build import ReportResult, build_report
from coact_verl.report.logs import ReportInputError, RunLog, find_run_logs, read_run_log

__all__ = ["ReportInputError", "ReportResult", "RunLog", "build_report", "find_run_logs", "read_run_log"]
