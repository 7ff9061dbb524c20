"""Label-efficiency studies: accuracy against oracle labels used, per arm, over seeds.

``label_efficiency.json`` in the run folder (written by whoever runs the study)::

    {
      "metric": "val-core/openai/gsm8k/acc/mean@1",      # optional: what "accuracy" measures
      "runs": [
        {"arm": "coact", "seed": 0,
         "points": [{"step": 0, "labels_used": 0, "accuracy": 0.31},
                    {"step": 50, "labels_used": 120, "accuracy": 0.42}, ...]},
        {"arm": "oracle-only", "seed": 0, "points": [...]},
        ...
      ]
    }

A bare list of runs is accepted as well. A point may carry ``per_kind`` (``{kind: accuracy}``, e.g. the
testbed's problem kinds); :func:`final_kind_accuracy` summarises the last point's per run. ``labels_used``
is the cumulative count of oracle labels charged, ``accuracy`` a rate in [0, 1], ``step`` (optional) the
training step of the point; of points with equal ``labels_used`` (a spent budget) the latest step counts.
Per arm, each seed's curve is linearly interpolated onto the union of the seeds' ``labels_used`` values
inside the range that every seed covers, then averaged: the curve is mean ± std (population) over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STUDY_FILE = "label_efficiency.json"


@dataclass(frozen=True)
class StudyRun:
    """One seed of one arm: points sorted by labels used, shapes ``(m,)``."""

    arm: str
    seed: int
    labels_used: tuple[float, ...]
    accuracy: tuple[float, ...]


@dataclass(frozen=True)
class ArmCurve:
    """Mean ± std of one arm's accuracy over seeds at each ``labels_used`` value, shapes ``(m,)``."""

    arm: str
    seeds: int
    labels_used: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_study(path: Path) -> tuple[str | None, list[StudyRun]]:
    """``(metric, runs)`` of a study file.

    Raises:
        ValueError: the file is not valid JSON or does not follow the schema (the message says where).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}, line {exc.lineno})") from None
    metric = raw.get("metric") if isinstance(raw, dict) else None
    entries = raw.get("runs") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise ValueError("expected a non-empty list of runs (or {'runs': [...]})")
    return (str(metric) if metric else None), [_run(i, entry) for i, entry in enumerate(entries)]


def _run(index: int, entry: Any) -> StudyRun:
    where = f"runs[{index}]"
    if not isinstance(entry, dict) or "arm" not in entry or not isinstance(entry.get("points"), list):
        raise ValueError(f"{where}: needs 'arm' and a list 'points'")
    by_labels: dict[float, tuple[float, float]] = {}  # labels_used -> (step, accuracy) of its latest point
    for j, point in enumerate(entry["points"]):
        try:
            labels, accuracy = float(point["labels_used"]), float(point["accuracy"])
            step = float(point.get("step", j))
        except (AttributeError, TypeError, KeyError, ValueError):
            raise ValueError(f"{where}.points[{j}]: needs numeric 'labels_used' and 'accuracy'") from None
        if math.isfinite(labels) and math.isfinite(accuracy) and step >= by_labels.get(labels, (-math.inf,))[0]:
            by_labels[labels] = (step, accuracy)
    if not by_labels:
        raise ValueError(f"{where}: no finite points")
    labels_sorted = sorted(by_labels)
    return StudyRun(
        str(entry["arm"]),
        int(entry.get("seed", 0)),
        tuple(labels_sorted),
        tuple(by_labels[x][1] for x in labels_sorted),
    )


def arm_curves(runs: Sequence[StudyRun]) -> list[ArmCurve]:
    """Mean ± std curve per arm, arms in order of first appearance."""
    by_arm: dict[str, list[StudyRun]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    curves = []
    for arm, seeds in by_arm.items():
        low = max(r.labels_used[0] for r in seeds)
        high = min(r.labels_used[-1] for r in seeds)
        grid = np.array(sorted({x for r in seeds for x in r.labels_used if low <= x <= high}) or [low])
        values = np.stack([np.interp(grid, r.labels_used, r.accuracy) for r in seeds])  # (seeds, m)
        curves.append(
            ArmCurve(
                arm, len(seeds), tuple(grid.tolist()), tuple(values.mean(0).tolist()), tuple(values.std(0).tolist())
            )
        )
    return curves


@dataclass(frozen=True)
class KindAccuracy:
    """One arm's final accuracy on one kind of problem: mean ± std (population) over ``seeds``."""

    arm: str
    kind: str
    seeds: int
    mean: float
    std: float


def final_kind_accuracy(path: Path) -> list[KindAccuracy]:
    """Per arm and kind, the accuracy at each run's last point (runs without ``per_kind`` are left out).

    Raises:
        ValueError: the file is not valid JSON.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}, line {exc.lineno})") from None
    entries = raw.get("runs") if isinstance(raw, dict) else raw
    values: dict[tuple[str, str], list[float]] = {}
    for entry in entries if isinstance(entries, list) else []:
        points = entry.get("points") if isinstance(entry, dict) else None
        last = points[-1] if isinstance(points, list) and points and isinstance(points[-1], dict) else {}
        per_kind = last.get("per_kind")
        if isinstance(per_kind, dict):
            for kind, accuracy in per_kind.items():
                values.setdefault((str(entry.get("arm")), str(kind)), []).append(float(accuracy))
    return [KindAccuracy(arm, kind, len(v), float(np.mean(v)), float(np.std(v))) for (arm, kind), v in values.items()]
