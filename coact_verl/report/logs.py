"""Read verl ``file``-logger JSONL: one ``{"step": N, "data": {metric: value}}`` object per line.

Every ``*.jsonl`` under the run folder (recursively) whose first parsable line has that shape is one run,
named by its path relative to the folder. Lines of the same step are merged (verl logs validation before
training as a separate line). Values that are not finite numbers are dropped; an unparsable line (e.g. the
last line of a run still being written) is skipped and counted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ReportInputError(Exception):
    """The run folder holds nothing the report can read."""


@dataclass
class RunLog:
    """Metrics of one run.

    Attributes:
        name: the file's path relative to the run folder, without ``.jsonl``.
        path: the JSONL file.
        steps: metrics by step, ``{step: {key: value}}``.
        bad_lines: lines that were not valid JSON objects of the logger's shape.
    """

    name: str
    path: Path
    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    bad_lines: int = 0

    def keys(self) -> set[str]:
        """Every metric key logged at some step."""
        return {key for metrics in self.steps.values() for key in metrics}

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one metric over the steps that logged it, in step order."""
        pairs = [(step, metrics[key]) for step, metrics in sorted(self.steps.items()) if key in metrics]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def last(self, key: str) -> float | None:
        """The value at the last step that logged ``key``."""
        _, values = self.series(key)
        return values[-1] if values else None


def is_step_record(record: Any) -> bool:
    """Whether a parsed line has the file logger's ``{"step": int, "data": dict}`` shape."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("step"), int)
        and not isinstance(record.get("step"), bool)
        and isinstance(record.get("data"), dict)
    )


def is_generation_dump(path: Path) -> bool:
    """Whether ``path`` is one of verl's generation dumps (``trainer.rollout_data_dir`` or
    ``validation_data_dir``): JSON lines with ``input`` and ``output`` per sampled response."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(record, dict) and "input" in record and "output" in record
    return False


def read_run_log(path: Path, name: str | None = None) -> RunLog | None:
    """The run logged in ``path``, or ``None`` when the file is not a file-logger JSONL."""
    run = RunLog(name or path.stem, path)
    shape_checked = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                run.bad_lines += 1
                continue
            if not is_step_record(record):
                if not shape_checked:
                    return None
                run.bad_lines += 1
                continue
            shape_checked = True
            run.steps.setdefault(record["step"], {}).update(_numbers(record["data"]))
    return run if shape_checked else None


def find_run_logs(run_dir: Path) -> tuple[list[RunLog], list[str]]:
    """All runs under ``run_dir`` and notes on skipped files.

    Raises:
        ReportInputError: ``run_dir`` is not a folder, or holds no file-logger JSONL.
    """
    if not run_dir.is_dir():
        raise ReportInputError(f"run folder not found: {run_dir}")
    candidates = sorted(run_dir.rglob("*.jsonl"))
    runs: list[RunLog] = []
    notes: list[str] = []
    dumps: dict[str, int] = {}  # folder -> generation dumps in it
    for path in candidates:
        name = path.relative_to(run_dir).with_suffix("").as_posix()
        run = read_run_log(path, name)
        if run is None and is_generation_dump(path):
            folder = path.parent.relative_to(run_dir).as_posix()
            dumps[folder] = dumps.get(folder, 0) + 1
        elif run is None:
            notes.append(f"`{name}.jsonl` skipped: not in the file logger's {{step, data}} shape")
        else:
            runs.append(run)
            if run.bad_lines:
                notes.append(f"`{name}.jsonl`: {run.bad_lines} unreadable line(s) skipped")
    if dumps:
        folders = ", ".join(f"`{folder}/` ({count})" for folder, count in sorted(dumps.items()))
        notes.append(f"verl generation dumps (responses, not metrics) not read: {folders}")
    if not runs:
        found = f"{len(candidates)} .jsonl file(s), none" if candidates else "no .jsonl file"
        raise ReportInputError(
            f"{run_dir}: {found} with verl file-logger lines {{'step': N, 'data': {{...}}}} "
            "(train with trainer.logger=['console','file'])"
        )
    return runs, notes


def _numbers(data: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in data.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out
