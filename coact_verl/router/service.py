"""One router for a whole job, behind one small interface.

verl streams a step's groups through several rollout workers (and, on the drop-in path, a reward gate); each
group asks :meth:`RouterService.route` for its route and reports the oracle's answer to
:meth:`RouterService.observe`. Served from one place (a named Ray actor in training, see
``coact_verl.adapters.router_actor``), the k-NN reference set, the pacing windows, the branch yields, the
calibration and the audit see every group of the job, and the trainer saves and restores them with verl's
checkpoints (:class:`~coact_verl.step.RouterHook`). :class:`LocalRouter` serves a single process (tests, the
``route`` command, a labeller without Ray) through the same asynchronous calls.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from coact_verl.config import RouterConfig
from coact_verl.router.bands import GroupView, Route
from coact_verl.router.router import Router


class RouterClient(Protocol):
    """What a labeller needs of the job's router (local or remote)."""

    async def route(self, view: GroupView, step: int) -> Route:
        """Route one group of training step ``step``."""
        ...

    async def observe(self, view: GroupView, route: Route, majority_correct: bool, labeled: bool, task: str) -> None:
        """Learn from the oracle's answer for a group this router sent there."""
        ...


class RouterService:
    """The job's :class:`Router` with the step kept inside: the trainer announces each step
    (:meth:`begin_step`), or else the first group of a later step starts it, as a step of ``groups_per_step``
    groups when that is known (verl's stock trainer: ``data.train_batch_size`` prompts a step) and otherwise
    paced by the previous step's size.

    verl's synchronous trainer finishes every group of a step before the next step's rollout, so a group of an
    earlier step (never seen in practice) is routed within the current one rather than rewinding the pacing.
    """

    def __init__(self, cfg: RouterConfig, budget_total: int | None = None, groups_per_step: int | None = None) -> None:
        if groups_per_step is not None and groups_per_step < 1:
            raise ValueError(f"groups_per_step must be >= 1 (data.train_batch_size), got {groups_per_step}")
        self.router = Router(cfg, budget_total=budget_total)
        self.settings = (cfg, budget_total)
        self.groups_per_step = groups_per_step
        self.step: int | None = None

    def settings_of(self) -> tuple[RouterConfig, int | None]:
        """``(router settings, total budget)`` this router was started with."""
        return self.settings

    def begin_step(self, step: int, n_groups: int | None) -> None:
        """Start training step ``step`` of ``n_groups`` groups (the trainer knows it before the rollout): the step's
        budget is then exact, ``oracle_share_per_step`` of ``n_groups``, never one label ahead."""
        self.step = step
        self.router.begin_step(n_groups)

    def route(self, view: GroupView, step: int) -> Route:
        if self.step is None or step > self.step:  # nobody announced this step
            self.begin_step(step, self.groups_per_step)
        return self.router.route_online(view)

    def observe(self, view: GroupView, route: Route, majority_correct: bool, labeled: bool, task: str) -> None:
        self.router.observe(view, route, majority_correct, labeled, task=task)

    def metrics(self) -> dict[str, float]:
        """Routing metrics since the previous call (see :meth:`Router.metrics`)."""
        return self.router.metrics(reset=True)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: the router's (arrays as base64 float32) and the step it is on."""
        return {"router": _encode(self.router.state_dict()), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.router.load_state_dict(_decode(state["router"]))
        self.step = state.get("step")


class LocalRouter:
    """:class:`RouterClient` over a :class:`RouterService` in this process (calls never interleave: no await)."""

    def __init__(self, service: RouterService) -> None:
        self.service = service

    async def route(self, view: GroupView, step: int) -> Route:
        return self.service.route(view, step)

    async def observe(self, view: GroupView, route: Route, majority_correct: bool, labeled: bool, task: str) -> None:
        self.service.observe(view, route, majority_correct, labeled, task)


_ARRAY = "__float32_b64__"


def _encode(value: Any) -> Any:
    """``value`` with every numpy array replaced by ``{_ARRAY: base64, "shape": [...]}`` (float32)."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value, dtype=np.float32)
        return {_ARRAY: base64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and _ARRAY in value:
        flat = np.frombuffer(base64.b64decode(value[_ARRAY]), dtype=np.float32)
        return flat.reshape(value["shape"]).copy()
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value
