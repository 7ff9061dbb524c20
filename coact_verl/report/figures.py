"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each ``plot_*`` function writes one PNG into the output folder and returns a :class:`FigureResult`; when
the metrics it needs are absent it writes nothing and returns the reason instead.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coact_verl.report import keys
from coact_verl.report.calibration import CalibrationPoint
from coact_verl.report.logs import RunLog
from coact_verl.report.study import ArmCurve, KindAccuracy

LINESTYLES = ("-", "--", ":", "-.")
ROUTE_COLORS = {"self": "tab:green", "oracle": "tab:blue", "drop": "tab:gray"}
DPI = 110
LEGEND_INSIDE_MAX = 6  # legends with more entries go to the right of the axes


@dataclass(frozen=True)
class FigureResult:
    """A figure of the report: ``file`` is the PNG's name in the output folder, ``None`` when skipped."""

    title: str
    file: str | None
    note: str


def plot_calibration_steps(runs: Sequence[RunLog], out_dir: Path) -> FigureResult:
    """Per training step: self-label precision against mean agreement (an aggregate stand-in for calibration)."""
    title = "Calibration (training steps)"
    needed = (keys.AGREEMENT_MEAN, keys.SELF_LABEL_PRECISION)
    pairs = [(run, _paired(run, *needed)) for run in runs]
    pairs = [(run, xy) for run, xy in pairs if xy[0]]
    if not pairs:
        return _skipped(title, needed)
    fig, ax = _figure()
    for i, (run, (x, y)) in enumerate(pairs):
        ax.scatter(x, y, s=18, label=run.name, color=f"C{i}", alpha=0.8)
    _diagonal(ax)
    ax.set_xlabel("mean agreement of the batch")
    ax.set_ylabel("self-label precision (gold)")
    _finish(ax, "Self-label precision vs mean agreement, one point per step", legend=len(pairs) > 1)
    return _save(
        fig,
        out_dir / "calibration_steps.png",
        title,
        "Training logs carry only per-step aggregates, so this is not a per-prompt calibration curve: each point "
        "is one step, plotting the gold precision of the majority labels the router accepted "
        f"(`{keys.SELF_LABEL_PRECISION}`) against the batch's mean agreement (`{keys.AGREEMENT_MEAN}`).",
    )


def plot_calibration_eval(evals: Sequence[tuple[str, list[CalibrationPoint]]], out_dir: Path) -> FigureResult:
    """Majority correctness against agreement, per prompt, from ``eval.json`` files."""
    title = "Calibration (evaluation)"
    evals = [(name, points) for name, points in evals if points]
    if not evals:
        return FigureResult(title, None, "Skipped: no `eval.json` (from `coact-verl eval`) under the run folder.")
    fig, ax = _figure()
    for i, (name, points) in enumerate(evals):
        x = [p.agreement for p in points]
        y = [p.accuracy for p in points]
        ax.plot(x, y, marker="o", color=f"C{i}", label=name)
        ax.scatter(x, y, s=[12 + 4 * p.count for p in points], color=f"C{i}", alpha=0.3)
    _diagonal(ax)
    ax.set_xlabel("agreement (largest answer cluster / n)")
    ax.set_ylabel("majority answer correct (share of prompts)")
    _finish(ax, "Majority correctness vs agreement (marker area ~ prompts)", legend=True)
    drawn = ", ".join(f"`{name}` ({sum(p.count for p in points)} problems)" for name, points in evals)
    return _save(
        fig,
        out_dir / "calibration_eval.png",
        title,
        "One point per agreement level over the problems of each `eval.json`: the share whose majority answer "
        f"matches the gold answer. Points on the diagonal mean agreement is a calibrated confidence. Drawn: {drawn}.",
    )


def plot_routing(runs: Sequence[RunLog], out_dir: Path) -> FigureResult:
    """Route fractions (self / oracle / drop) over steps."""
    title = "Routing"
    drawn = [(run, route, key) for run in runs for route, key in keys.ROUTE_FRACTIONS.items() if run.series(key)[0]]
    if not drawn:
        return _skipped(title, tuple(keys.ROUTE_FRACTIONS.values()), any_of=True)
    fig, ax = _figure()
    run_index = {run.name: i for i, run in enumerate(runs)}
    for run, route, key in drawn:
        steps, values = run.series(key)
        label = route if len(runs) == 1 else f"{route} ({run.name})"
        ax.plot(steps, values, LINESTYLES[run_index[run.name] % 4], color=ROUTE_COLORS[route], label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("share of the batch's prompts")
    _finish(ax, "Routes per step", legend=True)
    return _save(fig, out_dir / "routing.png", title, "Share of prompts self-labelled, sent to the oracle, or dropped.")


def plot_budget(runs: Sequence[RunLog], out_dir: Path) -> FigureResult:
    """Oracle labels spent over steps, with the total budget when bounded."""
    title = "Oracle budget"
    drawn = [run for run in runs if run.series(keys.BUDGET_SPENT)[0]]
    if not drawn:
        return _skipped(title, (keys.BUDGET_SPENT,))
    fig, ax = _figure()
    for i, run in enumerate(drawn):
        ax.plot(*run.series(keys.BUDGET_SPENT), color=f"C{i}", label=f"spent ({run.name})")
        total = run.last(keys.BUDGET_TOTAL)
        if total is not None:
            ax.axhline(total, color=f"C{i}", linestyle="--", linewidth=1, label=f"total ({run.name})")
    ax.set_xlabel("step")
    ax.set_ylabel("oracle labels")
    _finish(ax, "Oracle labels spent (cumulative)", legend=True)
    return _save(fig, out_dir / "budget.png", title, f"`{keys.BUDGET_SPENT}`; dashed: `{keys.BUDGET_TOTAL}`.")


def plot_accuracy(runs: Sequence[RunLog], out_dir: Path) -> FigureResult:
    """Validation accuracy (verl's ``val-core`` keys) and the training responses' gold accuracy over steps."""
    title = "Accuracy"
    lines: list[tuple[RunLog, str, str, str, str | None]] = []  # (run, key, label, line style, marker)
    for run in runs:
        for key in keys.validation_keys(run.keys()):
            lines.append((run, key, f"val {keys.short_validation_name(key)}", "-", "o"))
        if run.series(keys.TRAIN_GOLD_ACCURACY)[0]:
            lines.append((run, keys.TRAIN_GOLD_ACCURACY, "train responses (gold)", "--", None))
    if not lines:
        return _skipped(title, ("val-core/<source>/acc/mean@N", keys.TRAIN_GOLD_ACCURACY), any_of=True)
    fig, ax = _figure()
    for i, (run, key, label, style, marker) in enumerate(lines):
        ax.plot(
            *run.series(key), style, marker=marker, markersize=3, color=f"C{i % 10}", label=_label(label, run, runs)
        )
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    _finish(ax, "Accuracy over steps", legend=True)
    return _save(
        fig,
        out_dir / "accuracy.png",
        title,
        "Solid: verl validation (`val-core/<source>/acc/mean@N`, `maj@N/mean`); dashed: share of labelled groups' "
        f"training responses that match the hidden gold (`{keys.TRAIN_GOLD_ACCURACY}`).",
    )


def plot_label_efficiency(curves: Sequence[ArmCurve], metric: str | None, out_dir: Path) -> FigureResult:
    """Accuracy against oracle labels used, mean ± std over seeds per arm."""
    title = "Label efficiency"
    fig, ax = _figure()
    for i, curve in enumerate(curves):
        low = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
        high = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
        ax.plot(
            curve.labels_used,
            curve.mean,
            marker="o",
            markersize=3,
            color=f"C{i}",
            label=f"{curve.arm} (n={curve.seeds})",
        )
        ax.fill_between(curve.labels_used, low, high, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("oracle labels used")
    ax.set_ylabel("\n".join(textwrap.wrap(f"accuracy ({metric})", 48)) if metric else "accuracy")
    _finish(ax, "Accuracy vs labels used (mean ± std over seeds)", legend=True)
    return _save(fig, out_dir / "label_efficiency.png", title, "Bands: ± one standard deviation over seeds.")


def plot_kind_accuracy(cells: Sequence[KindAccuracy], out_dir: Path) -> FigureResult:
    """Final accuracy per problem kind, one bar per arm (mean ± std over seeds)."""
    title = "Accuracy per kind"
    if not cells:
        return FigureResult(title, None, "Skipped: the study's points carry no `per_kind` accuracies.")
    arms = list(dict.fromkeys(c.arm for c in cells))
    kinds = list(dict.fromkeys(c.kind for c in cells))
    by_key = {(c.arm, c.kind): c for c in cells}
    fig, ax = _figure()
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        xs = [k + (i - (len(arms) - 1) / 2) * width for k in range(len(kinds))]
        found = [by_key.get((arm, kind)) for kind in kinds]
        ax.bar(
            xs,
            [c.mean if c else 0.0 for c in found],
            width,
            yerr=[c.std if c else 0.0 for c in found],
            color=f"C{i}",
            label=arm,
            capsize=2,
        )
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("final accuracy")
    _finish(ax, "Final accuracy per kind (mean ± std over seeds)", legend=True)
    return _save(fig, out_dir / "label_efficiency_kinds.png", title, "Error bars: ± one standard deviation over seeds.")


# ---------------------------------------------------------------------------------------------------- helpers


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(ax: Any, title: str, legend: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if legend:
        entries = len(ax.get_legend_handles_labels()[1])
        if entries > LEGEND_INSIDE_MAX:  # beside the axes, where it hides no line
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        else:
            ax.legend(fontsize=7)


def _diagonal(ax: Any) -> None:
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":", label="ideal")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)


def _save(fig: Any, path: Path, title: str, note: str) -> FigureResult:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return FigureResult(title, path.name, note)


def _skipped(title: str, needed: Sequence[str], any_of: bool = False) -> FigureResult:
    names = ", ".join(f"`{k}`" for k in needed)
    if len(needed) > 1:
        names = f"any of {names}" if any_of else f"all of {names} at one step"
    return FigureResult(title, None, f"Skipped: no run logs {names}.")


def _paired(run: RunLog, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    steps = [s for s, m in sorted(run.steps.items()) if x_key in m and y_key in m]
    return [run.steps[s][x_key] for s in steps], [run.steps[s][y_key] for s in steps]


def _label(label: str, run: RunLog, runs: Sequence[RunLog]) -> str:
    return label if len(runs) == 1 else f"{label} ({run.name})"
