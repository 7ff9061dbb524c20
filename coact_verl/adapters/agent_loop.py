"""The group step inside verl's V1 rollout workers (``AgentLoopWorkerTQ``).

verl runs the n sessions of a prompt concurrently on one worker (``_run_prompt``) and stores each
session in TransferQueue from ``_agent_loop_postprocess``, asking a reward worker for its score unless
the agent loop already set ``reward_score``. CoAct holds each finished session of a training prompt at one
:class:`~coact_verl.group.gather.SiblingBarrier` until all n have arrived, labels the group once
(:class:`~coact_verl.group.labeler.GroupLabeler`, routed by the job's one router,
:mod:`coact_verl.adapters.router_actor`), sets every session's ``reward_score`` and
``reward_extra_info`` (:class:`~coact_verl.records.ResponseInfo`), and only then lets verl's own postprocess
store them. The trainer samples a group only after ``_run_prompt`` tags it ``finished``, which happens after
all of this, so nothing reads a group before its rewards are written, and no per-sample reward call is made
for training samples. A session that fails releases its siblings with the same error (verl then tags the
group ``failure`` and the replay buffer replaces it); a group that does not complete within
``coact.group.rollout_timeout_s`` fails the same way instead of hanging the step. Validation prompts (verl's
``validate`` flag) take verl's usual per-sample path: each row is marked ``extra_info.coact_validate`` and the
``coact`` reward manager scores it alone against its label, whatever its ``split``.

Select with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=`` and the FQN of
:class:`CoActAgentLoopManager` (the CoAct configs do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from coact_verl.adapters.router_actor import job_router
from coact_verl.group.gather import SiblingBarrier
from coact_verl.group.labeler import GroupLabeler, GroupRequest, feedback_infos, response_finished, stop_token_ids
from coact_verl.oracle.job import coact_config, ensure_oracle_service
from coact_verl.records import VALIDATE_KEY, PromptRow

_BASE = AgentLoopWorkerTQ.__ray_actor_class__
#: One finished session: verl's outputs (the last one holds the final response) and the postprocess kwargs.
Session = tuple[list[Any], dict[str, Any]]


def group_request(
    uid: str,
    sessions: Sequence[Session],
    tokenizer: Any,
    default_task: str,
    max_response_tokens: int,
    stop_ids: frozenset[int],
) -> GroupRequest:
    """Decode the final output of every session (in session order) into a :class:`GroupRequest`, marking the
    responses the rollout cut at ``max_response_tokens`` (see :func:`response_finished`; ``stop_ids``: the
    tokenizer's :func:`stop_token_ids`)."""
    kwargs = sessions[0][1]
    ids = [outputs[-1].response_ids for outputs, _ in sessions]
    responses = tuple(tokenizer.decode(r, skip_special_tokens=True) for r in ids)
    finished = tuple(response_finished(r, max_response_tokens, stop_ids) for r in ids)
    row = PromptRow.from_row(kwargs)
    step = int(kwargs.get("global_steps") or 0)
    return GroupRequest.from_row(row, uid, default_task, step, responses, finished)


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
        self.labeler = GroupLabeler(self.coact, oracle_url=self.coact.oracle.url, router=job_router(self.coact))
        self.stop_ids = stop_token_ids(self.tokenizer)  # a response ending on one of them was not cut
        self.barrier: SiblingBarrier[Session, None] = SiblingBarrier(
            self._label_group, self.coact.group.rollout_timeout_s
        )
        node = ray.get_runtime_context().get_node_id()
        print(f"CoAct rollout worker on node {node}, oracle {self.coact.oracle.url}", flush=True)  # noqa: T201

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        uid = prompt["uid"]
        if not trajectory["validate"]:
            self.barrier.open(uid, int(prompt.get("__rollout_n__", self.config.actor_rollout_ref.rollout.n)))
        try:
            await _BASE._run_prompt(self, prompt, sampling_params, trajectory, trace)
        finally:
            self.barrier.close(uid)

    async def _run_agent_loop(self, sampling_params: dict, trajectory: dict, *, agent_name: str, **kwargs: Any):
        try:
            return await _BASE._run_agent_loop(self, sampling_params, trajectory, agent_name=agent_name, **kwargs)
        except BaseException as error:
            self.barrier.fail(kwargs.get("uid"), error)
            raise

    async def _agent_loop_postprocess(self, output: Any, validate: bool, **kwargs: Any) -> None:
        if validate:  # verl's own flag: the reward manager scores the row alone, whatever its split
            return await _BASE._agent_loop_postprocess(self, output, validate, **mark_validation(kwargs))
        uid = kwargs["uid"]
        if self.barrier.is_open(uid):
            outputs = output if isinstance(output, list) else [output]
            await self.barrier.arrive(uid, int(kwargs["session_id"]), (outputs, kwargs))
        return await _BASE._agent_loop_postprocess(self, output, validate, **kwargs)

    async def _label_group(self, uid: str, sessions: Sequence[Session]) -> None:
        """Label one complete group and write each session's ``reward_score`` and ``reward_extra_info``."""
        row = PromptRow.from_row(sessions[0][1])
        if row.feedback is not None:  # a user pair: nothing to label
            infos = feedback_infos(len(sessions), row.feedback.kind, row.feedback.weight, row.prompt_id or uid)
        else:
            limit = int(self.config.actor_rollout_ref.rollout.response_length)
            request = group_request(uid, sessions, self.tokenizer, self.coact.consistency.task, limit, self.stop_ids)
            infos = (await self.labeler.label(request)).response_infos(request.prompt_id)
        for (outputs, _), info in zip(sessions, infos, strict=True):
            outputs[-1].reward_score = info.reward
            outputs[-1].extra_fields["reward_extra_info"] = info.to_extra_info()


class CoActAgentLoopManager(AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` whose workers run the CoAct group step; starts the local oracle if needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ensure_oracle_service(self.config)
        self.agent_loop_workers_class = ray.remote(CoActAgentLoopWorker)
