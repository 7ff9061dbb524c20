"""The job's router at the step's end: its metrics into the step's, its state into verl's checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from coact_verl.step.hooks import StepBatch


class RouterState(Protocol):
    """The trainer's view of the job's router (:class:`~coact_verl.router.RouterService`, or a handle to it)."""

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class RouterHook:
    """Logs ``coact/router/...`` and ``coact/audit/...`` (per route reason, per acquisition branch, the calibration
    curve, the audit interval) for every group the job's router saw in the step, and saves and restores the
    router (reference set, pacing windows, branch yields, calibration, audit) with verl's checkpoints."""

    state_file = "coact_router.json"

    def __init__(self, router: RouterState) -> None:
        self.router = router

    def after_step(self, batch: StepBatch) -> dict[str, float]:
        return self.router.metrics()

    def rows_for_batch(self, step: int, free: int) -> list[dict[str, Any]]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return self.router.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.router.load_state_dict(state)
