"""Calibration of agreement as a confidence: how often the majority answer is right at each agreement level.

Per-prompt data comes from ``eval.json`` files (written by ``coact-verl eval``) found under the run folder:
each row carries ``agreement`` (largest answer cluster / n) and ``majority_correct``. Training logs only hold
per-step aggregates; for those the report plots self-label precision against mean agreement instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CalibrationPoint:
    """Prompts sharing one agreement value: ``count`` of them, ``accuracy`` of their majority answers in [0, 1]."""

    agreement: float
    count: int
    accuracy: float


def calibration_points(agreements: Sequence[float], majority_correct: Sequence[bool]) -> list[CalibrationPoint]:
    """One point per distinct agreement value (values are k/n), by increasing agreement; shapes ``(prompts,)``."""
    if len(agreements) != len(majority_correct):
        raise ValueError(f"{len(agreements)} agreements but {len(majority_correct)} correctness flags")
    groups: dict[float, list[bool]] = {}
    for agreement, correct in zip(agreements, majority_correct, strict=True):
        groups.setdefault(round(float(agreement), 6), []).append(bool(correct))
    return [CalibrationPoint(a, len(flags), sum(flags) / len(flags)) for a, flags in sorted(groups.items())]


def load_eval_rows(path: Path) -> tuple[list[float], list[bool]]:
    """``(agreements, majority_correct)`` of an ``eval.json``; raises ``ValueError`` when it has neither."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        return [float(r["agreement"]) for r in rows], [bool(r["majority_correct"]) for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path.name}: no per-problem agreement/majority_correct rows ({exc})") from None
