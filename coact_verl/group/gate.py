"""The group step for a reward function that sees one response at a time (verl's reward loop).

:class:`RewardGate` is where the n responses of a training prompt meet: a
:class:`~coact_verl.group.gather.SiblingBarrier` in front of a :class:`~coact_verl.group.labeler.GroupLabeler`.
One instance serves a whole job (the drop-in reward manager runs it in one Ray actor), so it also moves the oracle
service's run to each new training step (nothing else does on this path): the service charges every query to the
run's current step, and its per-step budget counts per step only when the step moves. :func:`score_alone` scores
a validation response against its row's ground truth, without the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coact_verl.config import CoActConfig
from coact_verl.consistency import AnswerClusterer, extract_answer
from coact_verl.group.gather import GroupTimeout, SiblingBarrier
from coact_verl.group.labeler import GroupLabeler, GroupOutcome, GroupRequest
from coact_verl.records import PromptRow, ResponseInfo
from coact_verl.router import RouterClient

logger = logging.getLogger(__name__)


class GateSetupError(RuntimeError):
    """The gate cannot label: its oracle failed the start-up check (the message names what to set)."""


@dataclass(frozen=True)
class Arrival:
    """One training response waiting for its siblings: decoded text, dataset row, training step, and whether
    it ended on its own rather than at the rollout's length limit (:attr:`GroupRequest.finished`)."""

    response: str
    row: PromptRow
    step: int
    finished: bool = True


class RewardGate:
    """Gathers each training prompt's n responses, labels the group once, answers each response.

    Args:
        config: plugin settings; a response waits at most ``config.group.reward_timeout_s`` seconds.
        oracle_url: the oracle service after a successful start-up handshake (``None``: no oracle).
        setup_error: the handshake's error; then every :meth:`arrive` raises :class:`GateSetupError` with it.
        router: the job's router; ``None``: the gate's own.
    """

    def __init__(
        self,
        config: CoActConfig,
        oracle_url: str | None,
        setup_error: str | None = None,
        router: RouterClient | None = None,
    ) -> None:
        self.config = config
        self.setup_error = setup_error
        self.labeler = GroupLabeler(config, oracle_url=oracle_url, router=router)
        self.barrier: SiblingBarrier[Arrival, GroupOutcome] = SiblingBarrier(self._label, config.group.reward_timeout_s)
        self._numbered: dict[str, int] = {}  # uid -> responses numbered so far (callers without session ids)
        self.service_step = 0  # the largest training step the service's run was asked to move to
        self.step_failures = 0  # moves to a new step the service did not confirm (outage, error)
        self._step_lock = asyncio.Lock()

    def ready(self) -> str | None:
        """``None`` when the gate can label, else the oracle set-up error."""
        return self.setup_error

    async def arrive(self, uid: str, session_id: int | None, size: int, arrival: Arrival) -> ResponseInfo:
        """Wait for the ``size`` responses of ``uid``; this response's info (``group_complete`` False and reward 0
        after the timeout). ``session_id`` ``None`` numbers responses in arrival order."""
        if self.setup_error is not None:
            raise GateSetupError(self.setup_error)
        if session_id is None:
            session_id = self._numbered.get(uid, 0)
            self._numbered[uid] = session_id + 1
        prompt_id = arrival.row.prompt_id or uid
        try:
            delivery = await self.barrier.arrive(uid, session_id, arrival, size=size)
        except GroupTimeout:
            return ResponseInfo.incomplete(prompt_id).replace(group_complete=False)
        finally:
            if not self.barrier.is_open(uid):
                self._numbered.pop(uid, None)
        return delivery.outcome.response_info(delivery.index, prompt_id).replace(group_complete=True)

    async def advance_service_step(self, step: int) -> None:
        """Move the oracle service's run to training step ``step`` when it is past every step seen so far (never
        back: late groups of an earlier step stay on the newer one). One try per step, bounded by
        ``config.oracle.max_wait_s`` seconds; a failure is counted in :attr:`step_failures` and logged, and queries
        are then charged to the step the service is still at."""
        client = self.labeler.oracle_client()
        if client is None or step <= self.service_step:
            return
        async with self._step_lock:  # the step's queries wait until the service is on it
            if step <= self.service_step:
                return
            try:
                moved = await client.set_step(step)
            except Exception:  # noqa: BLE001 - an unreadable answer must not fail the group
                logger.debug("set_step(%d) failed", step, exc_info=True)
                moved = None
            self.service_step = step
            if moved is None:
                self.step_failures += 1
                logger.warning(
                    "oracle service did not move this run to training step %d (%d such failures so far): its queries"
                    " are charged to the step the service is still at",
                    step,
                    self.step_failures,
                )

    async def _label(self, uid: str, arrivals: Sequence[Arrival]) -> GroupOutcome:
        head = arrivals[0]
        await self.advance_service_step(head.step)
        responses = tuple(a.response for a in arrivals)
        finished = tuple(a.finished for a in arrivals)
        request = GroupRequest.from_row(head.row, uid, self.config.consistency.task, head.step, responses, finished)
        return await self.labeler.label(request)


async def score_alone(text: str, row: PromptRow, clusterer: AnswerClusterer, default_task: str) -> dict[str, Any]:
    """verl's reward result for a validation response: ``score``/``acc`` 1 when its answer equals the row's
    ``ground_truth``, and ``pred`` (its answer) for verl's ``maj@N``."""
    task = row.task or default_task
    pred = extract_answer(text, task)
    correct = bool(row.ground_truth) and pred is not None and await clusterer.asame(pred, row.ground_truth, task)
    score = 1.0 if correct else 0.0
    return {"reward_score": score, "reward_extra_info": {"score": score, "acc": score, "pred": pred or ""}}
