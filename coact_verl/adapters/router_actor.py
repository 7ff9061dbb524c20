"""The job's one router as a named Ray actor: every rollout worker, the drop-in reward gate and the trainer reach
the same :class:`~coact_verl.router.RouterService` (its calls run one at a time, in arrival order)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from coact_verl.config import CoActConfig
from coact_verl.router import GroupView, Route, RouterService

#: seconds the trainer waits for the router's metrics or state (a hung actor must not hang the step)
TRAINER_CALL_TIMEOUT_S = 120.0


class RemoteRouter:
    """A handle to the job's router: awaited calls for labellers (``RouterClient``), blocking ones (bounded by
    :data:`TRAINER_CALL_TIMEOUT_S`) for the trainer's ``RouterHook``."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def route(self, view: GroupView, step: int) -> Route:
        route: Route = await self.actor.route.remote(view, step)
        return route

    async def observe(self, view: GroupView, route: Route, majority_correct: bool, labeled: bool, task: str) -> None:
        await self.actor.observe.remote(view, route, majority_correct, labeled, task)

    def begin_step(self, step: int, n_groups: int | None) -> None:
        ray.get(self.actor.begin_step.remote(step, n_groups), timeout=TRAINER_CALL_TIMEOUT_S)

    def metrics(self) -> dict[str, float]:
        return ray.get(self.actor.metrics.remote(), timeout=TRAINER_CALL_TIMEOUT_S)

    def state_dict(self) -> dict[str, Any]:
        return ray.get(self.actor.state_dict.remote(), timeout=TRAINER_CALL_TIMEOUT_S)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ray.get(self.actor.load_state_dict.remote(dict(state)), timeout=TRAINER_CALL_TIMEOUT_S)


def job_router(coact: CoActConfig, groups_per_step: int | None = None) -> RemoteRouter:
    """The job's router actor, started with ``coact``'s router settings unless it runs already (the trainer starts
    it before any rollout worker; ``groups_per_step``, for a router that no trainer announces steps to, applies
    only when this call starts it). Raises ``ValueError`` when the running router has other settings: every
    process of a job must route by the same ``coact.router`` and ``coact.oracle.budget_total``."""
    name = f"coact_router_{ray.get_runtime_context().get_job_id()}"
    actor = ray.remote(RouterService).options(name=name, get_if_exists=True, num_cpus=0)
    handle = actor.remote(coact.router, coact.oracle.budget_total, groups_per_step)
    running = ray.get(handle.settings_of.remote(), timeout=TRAINER_CALL_TIMEOUT_S)
    if running != (coact.router, coact.oracle.budget_total):
        raise ValueError(
            f"the job's router ({name}) runs with {running}, this process asks for"
            f" {(coact.router, coact.oracle.budget_total)}: give every process of the job the same coact.router"
            " and coact.oracle.budget_total"
        )
    return RemoteRouter(handle)
