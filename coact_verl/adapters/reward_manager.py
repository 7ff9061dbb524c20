"""Drop-in group-aware reward manager: ``reward.reward_manager.name=coact`` in a stock verl config.

verl scores one response per ``run_single`` call. Training responses meet in one
:class:`~coact_verl.group.gate.RewardGate` per job (a Ray actor, awaited, never a blocking ``ray.get``), which labels
each group once; a response waits at most ``coact.group.reward_timeout_s`` seconds. The gate is the job's one oracle
user: it runs the oracle set-up and handshake (:func:`~coact_verl.oracle.job.ensure_oracle_service`);
a misconfigured oracle stops the run with the handshake's message, at start-up on the classic trainer
(:mod:`coact_verl.adapters.classic`), at the first scored response with verl's stock V1 agent loop.

Validation rows are scored alone against ``reward_model.ground_truth``: rows marked ``extra_info.coact_validate``
(verl's ``validate`` flag), with an evaluation ``split``, or (V1 trainer) whose uid verl registered in
TransferQueue's validation partition (a stock agent loop drops verl's flag before scoring).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import ray
import transfer_queue as tq
from omegaconf import OmegaConf
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from coact_verl.adapters.router_actor import job_router
from coact_verl.consistency import AnswerClusterer
from coact_verl.group.gate import Arrival, RewardGate, score_alone
from coact_verl.group.labeler import response_finished, stop_token_ids
from coact_verl.oracle.client import OracleSetupError
from coact_verl.oracle.job import coact_config, ensure_oracle_service
from coact_verl.records import PromptRow
from coact_verl.router import LocalRouter, RouterClient, RouterService

#: verl's V1 TransferQueue: its controller actor (name, namespace) and the partition of validation prompts.
TQ_CONTROLLER, VALIDATION_PARTITION = ("TransferQueueController", "transfer_queue"), "val"


class GroupGate(RewardGate):
    """The job's :class:`RewardGate`, built from the job's whole config (a container) after the oracle set-up; a
    stock config gets a ``coact.oracle`` node for the URL, token and run id that the set-up writes back."""

    def __init__(self, job_config: dict[str, Any]) -> None:
        job_config["coact"] = job_config.get("coact") or {}
        job_config["coact"]["oracle"] = job_config["coact"].get("oracle") or {}
        config = OmegaConf.create(job_config)
        try:
            url, error = ensure_oracle_service(config), None
        except OracleSetupError as setup_error:
            url, error = None, str(setup_error)
        coact = coact_config(config)
        # verl's stock trainer announces no step to the router: a step is data.train_batch_size groups
        per_step = OmegaConf.select(config, "data.train_batch_size")
        groups_per_step = int(per_step) if per_step else None
        # the job's router when the gate runs in a Ray job (as the drop-in manager starts it), else the gate's own
        if ray.is_initialized():
            router: RouterClient = job_router(coact, groups_per_step)
        else:
            router = LocalRouter(RouterService(coact.router, coact.oracle.budget_total, groups_per_step))
        super().__init__(coact, url, error, router=router)


#: verl's classic trainer feeds the reward manager through this agent-loop manager (or a subclass of it)
CLASSIC_MANAGER = "coact_verl.adapters.classic.CoActClassicAgentLoopManager"


def check_classic_manager(config: Any) -> None:
    """On verl's classic trainer (``trainer.use_v1=false``) only CoAct's agent-loop manager tells this reward manager
    a row's place in its group, the step and whether it is validation; without it every group would wait out its
    timeout. Raise, naming the setting, when another manager is configured."""
    if (config.get("trainer") or {}).get("use_v1", True):
        return
    fqn = (OmegaConf.select(config, "actor_rollout_ref.rollout.agent") or {}).get("agent_loop_manager_class")
    if fqn:
        module, _, name = str(fqn).rpartition(".")
        bases = getattr(importlib.import_module(module), name).__mro__
        if CLASSIC_MANAGER in {f"{base.__module__}.{base.__qualname__}" for base in bases}:
            return
    raise ValueError(
        "reward.reward_manager.name=coact on verl's classic trainer (trainer.use_v1=false) needs CoAct's agent-loop "
        f"manager: set actor_rollout_ref.rollout.agent.agent_loop_manager_class={CLASSIC_MANAGER} (configured: {fqn})"
    )


def gate_handle(config: Any) -> Any:
    """The job's gate actor, started with ``config`` (verl's job config) unless it runs already."""
    job = OmegaConf.to_container(config, resolve=True)
    name = f"coact_group_gate_{ray.get_runtime_context().get_job_id()}"
    actor = ray.remote(GroupGate).options(name=name, get_if_exists=True, num_cpus=0, max_concurrency=10_000)
    return actor.remote(job)


def open_gate(config: Any) -> Any:
    """Start the job's gate now; raise its oracle set-up error (so that the run stops at start)."""
    gate = gate_handle(config)
    error = ray.get(gate.ready.remote())
    if error is not None:
        raise OracleSetupError(error)
    return gate


@register("coact")
class CoActRewardManager(RewardManagerBase):
    """Group-aware CoAct rewards for verl's reward loop (see the module docstring)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        check_classic_manager(config)
        self.coact = coact_config(config)
        self.group_size = int(config.actor_rollout_ref.rollout.n)
        self._stop_ids = stop_token_ids(tokenizer)  # a response ending on one of them was not cut
        self._gate = None
        self._clusterer: AnswerClusterer | None = None
        self._validation_uids: dict[str, bool] | None = {} if _attach_transfer_queue(config) else None

    async def run_single(self, data) -> dict:
        item = data[-1:][0]
        ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-ids.shape[-1] :].sum())
        text = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(ids[:valid], skip_special_tokens=True)
        )
        fields, row = item.non_tensor_batch, PromptRow.from_row(item.non_tensor_batch)
        uid, session = str(fields["uid"]), fields.get("session_id")
        if row.is_validation or await self._registered_for_validation(uid):
            self._clusterer = self._clusterer or AnswerClusterer(self.coact.consistency)
            return await score_alone(text, row, self._clusterer, self.coact.consistency.task)
        self._gate = self._gate or gate_handle(self.config)
        start = time.monotonic()
        finished = response_finished(ids[:valid].tolist(), int(ids.shape[-1]), self._stop_ids)
        arrival = Arrival(text, row, int(fields.get("global_steps") or 0), finished)
        info = await self._gate.arrive.remote(uid, None if session is None else int(session), self.group_size, arrival)
        info = info.replace(gate_wait_s=time.monotonic() - start)
        return {"reward_score": info.reward, "reward_extra_info": info.to_extra_info()}

    async def _registered_for_validation(self, uid: str) -> bool:
        """Whether verl's V1 trainer registered ``uid`` as a validation prompt (asked once per uid)."""
        if self._validation_uids is None:
            return False
        if uid not in self._validation_uids:
            listing = await tq.async_kv_list(partition_id=VALIDATION_PARTITION)
            if len(self._validation_uids) > 100_000:
                self._validation_uids.clear()
            self._validation_uids[uid] = uid in (listing.get(VALIDATION_PARTITION) or {})
        return self._validation_uids[uid]


def _attach_transfer_queue(config: Any) -> bool:
    """Connect this process to the job's TransferQueue when it runs verl's V1 trainer (which has one)."""
    trainer = config.get("trainer") if hasattr(config, "get") else None
    if trainer is None or not trainer.get("use_v1", True) or not ray.is_initialized():
        return False
    try:
        ray.get_actor(TQ_CONTROLLER[0], namespace=TQ_CONTROLLER[1])
    except ValueError:  # no TransferQueue in this job
        return False
    tq.init()
    return True
