"""Drop-in group-aware reward manager: ``reward.reward_manager.name=coact`` in a stock verl config.

verl scores one response per ``run_single`` call, spread over reward workers. Training responses of a
prompt meet in :class:`GroupGate`, one async Ray actor per job that owns the same
:class:`~coact_verl.labeling.GroupLabeler` as the rollout path: once all n siblings of a uid have
arrived it labels the group once and answers every waiting call with its response's reward. A caller
awaits the gate (never a blocking ``ray.get``, which would serialise a worker's event loop), and the gate
gives up on a group after ``COACT_GATE_TIMEOUT_S`` seconds, so a failed or missing sibling cannot
deadlock the step; such responses get reward 0 with ``coact_route="incomplete"``.

Responses of validation rows (verl's ``validate`` flag, which the CoAct rollout worker passes on as
``extra_info.coact_validate``; or ``extra_info.split`` in ``test``/``val``/``validation``/``eval``) are
scored alone, at once, against their ``reward_model.ground_truth``: ``score``/``acc`` 1 when the extracted
answer is equivalent, and ``pred`` (the answer), so verl's ``maj@N`` validation metrics work. Training rows never use
``ground_truth``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import ray
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from coact_verl.adapters.oracle_service import coact_config
from coact_verl.consistency import AnswerClusterer, extract_answer
from coact_verl.labeling import GroupLabeler, GroupRequest, given_label, prompt_question

EVAL_SPLITS = frozenset({"test", "val", "validation", "eval"})
#: ``extra_info`` key with which the CoAct rollout worker marks a validation row (verl's ``validate`` flag).
VALIDATE_KEY = "coact_validate"
GATE_TIMEOUT_S = float(os.environ.get("COACT_GATE_TIMEOUT_S", "300"))
INCOMPLETE_INFO = {
    "coact_agreement": 0.0,
    "coact_entropy": 0.0,
    "coact_route": "incomplete",
    "coact_route_reason": "gate_timeout",
    "coact_label_source": "none",
    "coact_label": "",
    "coact_label_cluster": -1,
    "coact_pred": "",
    "coact_cluster": -1,
    "coact_oracle_status": "not_asked",
    "coact_reward": 0.0,
    "coact_prompt_id": "",
    "coact_pair_role": "",
    "coact_pair_weight": 1.0,
}


def is_validation_row(extra_info: dict[str, Any]) -> bool:
    """A row scored alone: marked by the CoAct rollout worker from verl's ``validate`` flag, or with an
    evaluation ``split``."""
    return bool(extra_info.get(VALIDATE_KEY)) or str(extra_info.get("split", "")).lower() in EVAL_SPLITS


class GroupGate:
    """Async actor body where the n responses of a prompt meet and are labelled once."""

    def __init__(self, coact_settings: dict[str, Any] | None) -> None:
        from coact_verl.config import CoActConfig

        config = CoActConfig.from_mapping(coact_settings)
        self.labeler = GroupLabeler(config, oracle_url=config.oracle.url)
        self.groups: dict[str, dict[str, Any]] = {}

    async def arrive(self, uid: str, session_id: int, size: int, fields: dict[str, Any], timeout_s: float):
        """Store one response; wait for its group's outcome. Returns ``(reward, extra_info, complete)``."""
        group = self.groups.setdefault(uid, {"items": {}, "outcome": asyncio.get_running_loop().create_future()})
        group["items"][session_id] = fields
        if len(group["items"]) >= size and not group.get("started"):
            group["started"] = True
            asyncio.get_running_loop().create_task(self._label(uid, group))
        try:
            outcome, order = await asyncio.wait_for(asyncio.shield(group["outcome"]), timeout=timeout_s)
        except asyncio.TimeoutError:
            self._forget(uid, group)
            return 0.0, dict(INCOMPLETE_INFO), False
        index = order.index(session_id)
        self._forget(uid, group)
        info = {**outcome.extra_info(index), "coact_prompt_id": fields["prompt_id"]}
        return float(outcome.rewards[index]), info, True

    async def _label(self, uid: str, group: dict[str, Any]) -> None:
        order = sorted(group["items"])
        head = group["items"][order[0]]
        request = GroupRequest(
            prompt_id=head["prompt_id"],
            question=head["question"],
            task=head["task"],
            step=head["step"],
            responses=tuple(group["items"][sid]["response"] for sid in order),
            given_label=head["given"][0],
            given_source=head["given"][1],
        )
        try:
            group["outcome"].set_result((await self.labeler.label(request), order))
        except Exception as error:  # every waiter sees the failure
            group["outcome"].set_exception(error)

    def _forget(self, uid: str, group: dict[str, Any]) -> None:
        group["served"] = group.get("served", 0) + 1
        if group["served"] >= len(group["items"]) and self.groups.get(uid) is group:
            del self.groups[uid]


def _gate_handle(config: Any) -> Any:
    name = f"coact_group_gate_{ray.get_runtime_context().get_job_id()}"
    settings = config.get("coact") if hasattr(config, "get") else None
    if settings is not None and hasattr(settings, "items"):
        from omegaconf import OmegaConf

        settings = OmegaConf.to_container(settings, resolve=True) if not isinstance(settings, dict) else settings
    return (
        ray.remote(GroupGate)
        .options(name=name, get_if_exists=True, num_cpus=0, max_concurrency=10_000)
        .remote(settings)
    )


@register("coact")
class CoActRewardManager(RewardManagerBase):
    """Group-aware CoAct rewards for verl's reward loop (see the module docstring)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        self.coact = coact_config(config)
        self.group_size = int(config.actor_rollout_ref.rollout.n)
        self._gate = None
        self._clusterer: AnswerClusterer | None = None

    async def run_single(self, data) -> dict:
        item = data[-1:][0]
        response_ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        text = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(response_ids[:valid], skip_special_tokens=True)
        )
        extra = item.non_tensor_batch.get("extra_info") or {}
        extra = extra if isinstance(extra, dict) else {}
        task = str(extra.get("task") or self.coact.consistency.task)
        if is_validation_row(extra):
            return await self._score_eval(text, item.non_tensor_batch.get("reward_model") or {}, task)
        uid = str(item.non_tensor_batch["uid"])
        fields = {
            "response": text,
            "prompt_id": str(extra.get("prompt_id") or uid),
            "question": prompt_question(extra, item.non_tensor_batch.get("raw_prompt")),
            "task": task,
            "step": int(item.non_tensor_batch.get("global_steps") or 0),
            "given": given_label(extra),
        }
        if self._gate is None:
            self._gate = _gate_handle(self.config)
        start = time.monotonic()
        reward, info, complete = await self._gate.arrive.remote(
            uid, int(item.non_tensor_batch["session_id"]), self.group_size, fields, GATE_TIMEOUT_S
        )
        info.update({"coact_group_complete": float(complete), "coact_gate_wait_s": time.monotonic() - start})
        return {"reward_score": reward, "reward_extra_info": info}

    async def _score_eval(self, text: str, reward_model: dict, task: str) -> dict:
        if self._clusterer is None:
            self._clusterer = AnswerClusterer(self.coact.consistency)
        pred = extract_answer(text, task)
        gold = str(reward_model.get("ground_truth") or "")
        correct = bool(gold) and pred is not None and await self._clusterer.asame(pred, gold, task)
        score = 1.0 if correct else 0.0
        return {"reward_score": score, "reward_extra_info": {"score": score, "acc": score, "pred": pred or ""}}
