"""Build the run report: figures (PNG) and ``report.md`` embedding them, with a summary table per run.

Inputs under the run folder: verl file-logger JSONL (see :mod:`~coact_verl.report.logs`), optionally
``label_efficiency.json`` at its top level (see :mod:`~coact_verl.report.study`) and ``eval.json`` files from
``coact-verl eval`` anywhere below it. A figure whose metrics are absent is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coact_verl.report import figures, keys
from coact_verl.report.calibration import CalibrationPoint, calibration_points, load_eval_rows
from coact_verl.report.logs import RunLog, find_run_logs
from coact_verl.report.study import STUDY_FILE, ArmCurve, arm_curves, final_kind_accuracy, load_study

REPORT_MD = "report.md"


@dataclass(frozen=True)
class ReportResult:
    """What was written: the markdown file, every figure (drawn or skipped) and notes on skipped inputs."""

    markdown: Path
    figures: tuple[figures.FigureResult, ...]
    notes: tuple[str, ...]


def build_report(run_dir: Path, out_dir: Path | None = None) -> ReportResult:
    """Write the figures and ``report.md`` to ``out_dir`` (default ``run_dir/report``).

    Raises:
        ReportInputError: ``run_dir`` holds no file-logger JSONL.
    """
    runs, notes = find_run_logs(run_dir)
    out = out_dir if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    curves, metric = _study(run_dir, notes)
    drawn = [
        figures.plot_accuracy(runs, out),
        figures.plot_routing(runs, out),
        figures.plot_budget(runs, out),
        figures.plot_calibration_steps(runs, out),
        figures.plot_calibration_eval(_evaluations(run_dir, notes), out),
    ]
    if curves:
        drawn.append(figures.plot_label_efficiency(curves, metric, out))
        kinds = final_kind_accuracy(run_dir / STUDY_FILE)
        if kinds:
            drawn.append(figures.plot_kind_accuracy(kinds, out))
    else:
        drawn.append(figures.FigureResult("Label efficiency", None, f"Skipped: no usable `{STUDY_FILE}`."))
    markdown = out / REPORT_MD
    markdown.write_text(render_markdown(run_dir, runs, drawn, curves, notes), encoding="utf-8")
    return ReportResult(markdown, tuple(drawn), tuple(notes))


def render_markdown(
    run_dir: Path,
    runs: Sequence[RunLog],
    drawn: Sequence[figures.FigureResult],
    curves: Sequence[ArmCurve],
    notes: Sequence[str],
) -> str:
    """The report text: summary table, one section per figure, the label-efficiency table and notes."""
    lines = [f"# CoAct run report: `{run_dir.name}`", "", f"{len(runs)} run log(s) under `{run_dir}`.", ""]
    lines += ["## Summary", "", *summary_table(runs), ""]
    for figure in drawn:
        lines += [f"## {figure.title}", ""]
        if figure.file is not None:
            lines += [f"![{figure.title}]({figure.file})", ""]
        lines += [figure.note, ""]
        if figure.title == "Label efficiency" and curves:
            lines += [*study_table(curves), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def summary_table(runs: Sequence[RunLog]) -> list[str]:
    """Markdown rows: per run, steps, validation accuracy (last, best), agreement, routes, budget, precision."""
    header = (
        "| run | steps | validation metric | val acc (last) | val acc (best) | agreement (last) "
        "| self / oracle / drop (mean) | labels spent | self-label precision (mean) |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        steps = sorted(run.steps)
        val_keys = keys.validation_keys(run.keys())
        val_values = run.series(val_keys[0])[1] if val_keys else []
        routes = " / ".join(_fmt(_mean(run.series(k)[1])) for k in keys.ROUTE_FRACTIONS.values())
        rows.append(
            f"| {run.name} | {len(steps)} ({steps[0]}–{steps[-1]}) "
            f"| {keys.short_validation_name(val_keys[0]) if val_keys else '–'} "
            f"| {_fmt(val_values[-1] if val_values else None)} | {_fmt(max(val_values) if val_values else None)} "
            f"| {_fmt(run.last(keys.AGREEMENT_MEAN))} | {routes} "
            f"| {_fmt(run.last(keys.BUDGET_SPENT), digits=0)} "
            f"| {_fmt(_mean(run.series(keys.SELF_LABEL_PRECISION)[1]))} |"
        )
    return rows


def study_table(curves: Sequence[ArmCurve]) -> list[str]:
    """Markdown rows: per arm, seeds, labels used at the end of the common range, accuracy there (mean ± std)."""
    rows = ["| arm | seeds | labels used | accuracy (mean ± std) |", "|---|---|---|---|"]
    for c in curves:
        rows.append(f"| {c.arm} | {c.seeds} | {c.labels_used[-1]:g} | {c.mean[-1]:.3f} ± {c.std[-1]:.3f} |")
    return rows


def _study(run_dir: Path, notes: list[str]) -> tuple[list[ArmCurve], str | None]:
    path = run_dir / STUDY_FILE
    if not path.is_file():
        return [], None
    try:
        metric, study_runs = load_study(path)
    except (OSError, ValueError) as exc:
        notes.append(f"`{STUDY_FILE}` ignored: {exc}")
        return [], None
    return arm_curves(study_runs), metric


def _evaluations(run_dir: Path, notes: list[str]) -> list[tuple[str, list[CalibrationPoint]]]:
    out = []
    for path in sorted(run_dir.rglob("eval.json")):
        try:
            agreements, correct = load_eval_rows(path)
        except (OSError, ValueError) as exc:
            notes.append(f"`{path.relative_to(run_dir)}` ignored: {exc}")
            continue
        name = path.parent.relative_to(run_dir).as_posix()
        out.append((name if name != "." else "eval", calibration_points(agreements, correct)))
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
