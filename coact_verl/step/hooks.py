"""The step-hook contract: what a hook sees after a training step and what it gives back."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from coact_verl.state_file import read_json, write_json_atomic


@dataclass(frozen=True)
class StepBatch:
    """One finished training step, one entry per response (padding rows left out).

    Attributes:
        step: verl's ``global_steps`` of the step.
        infos: each response's ``reward_extra_info`` (the group step's ``coact_*`` keys), shape ``(B,)``.
        rows: each response's dataset ``extra_info`` (question, task, provenance), shape ``(B,)``.
        uids: each response's group uid, shape ``(B,)``.
    """

    step: int
    infos: Sequence[Mapping[str, Any]]
    rows: Sequence[Mapping[str, Any]]
    uids: Sequence[str]


class StepHook(Protocol):
    """A piece of step-end work. ``state_file``: the file name of its state in a checkpoint, or ``None``."""

    @property
    def state_file(self) -> str | None: ...  # read-only, so a hook may narrow it to ``str`` or ``None``

    def after_step(self, batch: StepBatch) -> dict[str, float]:
        """Learn from the finished step; returns metrics for it."""
        ...

    def rows_for_batch(self, step: int, free: int) -> list[dict[str, Any]]:
        """Up to ``free`` dataset rows that replace the next rows of a training batch of ``step``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def after_step(hooks: Sequence[StepHook], batch: StepBatch) -> dict[str, float]:
    """Run every hook on ``batch`` in list order; their metrics merged (a later hook never overwrites a key)."""
    metrics: dict[str, float] = {}
    for hook in hooks:
        for key, value in hook.after_step(batch).items():
            if key in metrics:
                raise KeyError(f"metric {key!r} written by two step hooks")
            metrics[key] = value
    return metrics


def rows_for_batch(hooks: Sequence[StepHook], step: int, size: int) -> list[dict[str, Any]]:
    """Rows for a batch of ``size``, each hook in list order filling what the ones before it left free."""
    rows: list[dict[str, Any]] = []
    for hook in hooks:
        rows += hook.rows_for_batch(step, size - len(rows))
    return rows[:size]


def save_states(hooks: Sequence[StepHook], folder: str | os.PathLike[str]) -> list[str]:
    """Write each stateful hook's state into ``folder`` (atomic JSON); returns the paths written."""
    return [
        str(write_json_atomic(os.path.join(folder, hook.state_file), hook.state_dict()))
        for hook in hooks
        if hook.state_file
    ]


def load_states(hooks: Sequence[StepHook], folder: str | os.PathLike[str]) -> list[str]:
    """Restore each stateful hook whose file is in ``folder``; returns the paths read."""
    read = []
    for hook in hooks:
        path = os.path.join(folder, hook.state_file) if hook.state_file else None
        if path and os.path.exists(path):
            hook.load_state_dict(read_json(path))
            read.append(path)
    return read
