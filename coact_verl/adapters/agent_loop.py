"""The group step inside verl's V1 rollout workers (``AgentLoopWorkerTQ``).

verl runs the n sessions of a prompt concurrently on one worker (``_run_prompt``) and stores each
session in TransferQueue from ``_agent_loop_postprocess``, asking a reward worker for its score unless
the agent loop already set ``reward_score``. CoAct holds each finished session of a training prompt until
all n have arrived, labels the group once (:class:`~coact_verl.labeling.GroupLabeler`), sets every
session's ``reward_score`` and ``reward_extra_info``, and only then lets verl's own postprocess store
them. The trainer samples a group only after ``_run_prompt`` tags it ``finished``, which happens after
all of this, so nothing reads a group before its rewards are written, and no per-sample reward call
is made for training samples. A session that fails releases its siblings with the same error (verl then
tags the group ``failure`` and the replay buffer replaces it); a group that does not complete within
``GROUP_TIMEOUT_S`` fails the same way instead of hanging the step. Validation prompts (verl's ``validate``
flag) take verl's usual per-sample path: each row is marked ``extra_info.coact_validate`` and the ``coact``
reward manager scores it alone against its label, whatever its ``split``.

Select with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=`` and the FQN of
:class:`CoActAgentLoopManager` (the CoAct configs do).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import ray
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from coact_verl.adapters.oracle_service import coact_config, ensure_oracle_service
from coact_verl.adapters.reward_manager import VALIDATE_KEY
from coact_verl.labeling import GroupLabeler, GroupRequest, feedback_infos, given_label, prompt_question

logger = logging.getLogger(__name__)

GROUP_TIMEOUT_S = float(os.environ.get("COACT_GROUP_TIMEOUT_S", "1800"))
_BASE = AgentLoopWorkerTQ.__ray_actor_class__


@dataclass
class _PendingGroup:
    """Sessions of one prompt gathered so far; ``done`` resolves once the group is labelled (or failed)."""

    size: int
    sessions: dict[int, tuple[list[Any], dict[str, Any]]] = field(default_factory=dict)
    done: asyncio.Future | None = None
    started: bool = False

    def future(self) -> asyncio.Future:
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
        return self.done

    def fail(self, error: BaseException) -> None:
        future = self.future()
        if not future.done():
            future.set_exception(RuntimeError(f"a sibling session failed: {type(error).__name__}: {error}"))


def group_request(uid: str, group: _PendingGroup, tokenizer: Any, default_task: str) -> GroupRequest:
    """Decode the final output of every session, in session order, into a :class:`GroupRequest`."""
    kwargs = group.sessions[min(group.sessions)][1]
    extra = kwargs.get("extra_info") or {}
    extra = extra if isinstance(extra, dict) else {}
    responses = tuple(
        tokenizer.decode(group.sessions[sid][0][-1].response_ids, skip_special_tokens=True)
        for sid in sorted(group.sessions)
    )
    label, source = given_label(extra)
    return GroupRequest(
        prompt_id=str(extra.get("prompt_id") or uid),
        question=prompt_question(extra, kwargs.get("raw_prompt")),
        task=str(extra.get("task") or default_task),
        step=int(kwargs.get("global_steps") or 0),
        responses=responses,
        given_label=label,
        given_source=source,
    )


def mark_validation(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The session's kwargs with ``extra_info.coact_validate=True`` (a copy; the prompt's dict is shared).

    verl pops its ``validate`` flag before the reward worker sees a row; this marker carries it there, so
    the ``coact`` reward manager scores a validation row alone instead of waiting for n siblings.
    """
    extra = kwargs.get("extra_info")
    extra = dict(extra) if isinstance(extra, dict) else {}
    extra[VALIDATE_KEY] = True
    return {**kwargs, "extra_info": extra}


class CoActAgentLoopWorker(_BASE):
    """``AgentLoopWorkerTQ`` with the CoAct group step (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Ray cannot call an inherited __init__ of a raw actor class through super(); call it explicitly.
        _BASE.__init__(self, *args, **kwargs)
        self.coact = coact_config(self.config)
        self.labeler = GroupLabeler(self.coact, oracle_url=self.coact.oracle.url)
        self._pending: dict[str, _PendingGroup] = {}
        node = ray.get_runtime_context().get_node_id()
        print(f"CoAct rollout worker on node {node}, oracle {self.coact.oracle.url}", flush=True)  # noqa: T201

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        uid = prompt["uid"]
        if not trajectory["validate"]:
            size = int(prompt.get("__rollout_n__", self.config.actor_rollout_ref.rollout.n))
            self._pending[uid] = _PendingGroup(size=size)
        try:
            await _BASE._run_prompt(self, prompt, sampling_params, trajectory, trace)
        finally:
            self._pending.pop(uid, None)

    async def _run_agent_loop(self, sampling_params: dict, trajectory: dict, *, agent_name: str, **kwargs: Any):
        try:
            return await _BASE._run_agent_loop(self, sampling_params, trajectory, agent_name=agent_name, **kwargs)
        except BaseException as error:
            group = self._pending.get(kwargs.get("uid"))
            if group is not None:
                group.fail(error)
            raise

    async def _agent_loop_postprocess(self, output: Any, validate: bool, **kwargs: Any) -> None:
        if validate:  # verl's own flag: the reward manager scores the row alone, whatever its split
            return await _BASE._agent_loop_postprocess(self, output, validate, **mark_validation(kwargs))
        group = self._pending.get(kwargs["uid"])
        if group is None:
            return await _BASE._agent_loop_postprocess(self, output, validate, **kwargs)
        outputs = output if isinstance(output, list) else [output]
        group.sessions[int(kwargs["session_id"])] = (outputs, kwargs)
        done = group.future()
        if len(group.sessions) >= group.size and not group.started:
            group.started = True
            await self._label_group(kwargs["uid"], group)
        await asyncio.wait_for(asyncio.shield(done), timeout=GROUP_TIMEOUT_S)
        return await _BASE._agent_loop_postprocess(self, output, validate, **kwargs)

    async def _label_group(self, uid: str, group: _PendingGroup) -> None:
        done = group.future()
        try:
            extra = group.sessions[min(group.sessions)][1].get("extra_info") or {}
            if isinstance(extra, dict) and extra.get("coact_feedback"):  # a user pair: nothing to label
                pair = extra["coact_feedback"]
                infos = feedback_infos(len(group.sessions), str(pair["kind"]), float(pair["weight"]))
                rewards, prompt_id, outcome = [0.0] * len(infos), str(extra.get("prompt_id") or uid), None
            else:
                request = group_request(uid, group, self.tokenizer, self.coact.consistency.task)
                outcome = await self.labeler.label(request)
                infos = [outcome.extra_info(i) for i in range(len(group.sessions))]
                rewards, prompt_id = outcome.rewards, request.prompt_id
            for index, sid in enumerate(sorted(group.sessions)):
                final = group.sessions[sid][0][-1]
                final.reward_score = float(rewards[index])
                final.extra_fields["reward_extra_info"] = {**infos[index], "coact_prompt_id": prompt_id}
            if not done.done():
                done.set_result(outcome)
        except Exception as error:
            logger.exception("CoAct group step failed for %s", uid)
            if not done.done():
                done.set_exception(error)


class CoActAgentLoopManager(AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` whose workers run the CoAct group step; starts the local oracle if needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ensure_oracle_service(self.config)
        self.agent_loop_workers_class = ray.remote(CoActAgentLoopWorker)
