"""CoAct's DPO(+NLL) objective inside verl's FSDP actor (``trainer.v1.trainer_mode=coact_dpo``).

The group step marks one chosen and one rejected response per labelled group (``coact_pair_role``); users'
pairs (:class:`~coact_verl.step.FeedbackHook`) are groups whose first two rows the ``coact_feedback`` agent
loop replays, weighted by the voter's η̂. :class:`CoActDPOTrainer` swaps the actor's loss for
:func:`dpo_loss_fn` (``set_loss_fn``) and updates on the pairs only, laid out by :mod:`coact_verl.losses.pairs`
(empty pair slots: verl's padding rows, no loss). The reference worker runs with ``use_kl_loss=True``,
``kl_loss_coef=0``. Each micro-batch returns Σ_its pairs w·[−log σ(β·margin) + λ·NLL(chosen)/|chosen|] × D / P_m
(D data-parallel ranks, P_m real pairs of the pair's mini-batch): each optimizer step sees the mean over its pairs.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import torch
import transfer_queue as tq
import verl.utils.tensordict_utils as tu
from transfer_queue import KVBatchMeta
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.trainer.ppo.padding_utils import construct_minimal_padding_template
from verl.trainer.ppo.v1 import register_trainer
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict
from verl.workers.utils.padding import no_padding_2_padding

from coact_verl.adapters.trainer import CoActTrainer
from coact_verl.feedback.queue import FEEDBACK_AGENT
from coact_verl.losses import dpo_config_problems, dpo_nll_loss, pair_layout, pair_rows, pairs_per_mini_batch
from coact_verl.metric_keys import DPO_PAIRS, DPO_UPDATE_ROWS
from coact_verl.records import PromptRow, ResponseInfo
from coact_verl.step import FeedbackHook, StepHook

#: Non-tensor key of the actor batch: ``{uid: real pairs in that pair's mini-batch}``, the loss's normaliser.
PAIRS_KEY = "coact_dpo_pairs_in_mini_batch"
#: Fields the padding template rebuilds at its own length; other per-token fields are zeroed to match.
_REBUILT = {"prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "loss_mask"}


def _infos(extra_fields: list) -> list[ResponseInfo]:
    return [ResponseInfo.from_extra_info((e or {}).get("reward_extra_info") or {}) for e in extra_fields]


def dpo_loss_fn(
    model_output: dict, data: Any, dp_group: Any = None, *, beta: float, nll_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl loss-function contract: ``(model_output, micro-batch TensorDict) -> (loss, metrics)``.

    The loss is Σ_pairs w·loss × ``dp_size`` / P_m (module docstring), P_m from ``PAIRS_KEY``, or
    ``global_batch_size / 2`` (every row of the mini-batch in a pair) when the trainer did not set it.
    """
    log_probs = no_padding_2_padding(model_output["log_probs"], data).float()  # (B, T)
    padded = data.select("response_mask", "ref_log_prob").to_padded_tensor()
    mask = padded["response_mask"].to(log_probs.dtype)
    policy = (log_probs * mask).sum(-1)  # (B,)
    reference = (padded["ref_log_prob"].float() * mask).sum(-1).detach()
    lengths = mask.sum(-1).clamp(min=1.0)
    infos = _infos(tu.get(data, "extra_fields") or [])
    uids = [str(u) for u in tu.get(data, "uid")]
    chosen, rejected = pair_rows(uids, [i.pair_role for i in infos])
    if not chosen:
        return 0.0 * policy.sum(), {"dpo/pairs": 0.0}  # keeps the graph: verl calls backward on every micro-batch
    dp_size = int(tu.get_non_tensor_data(data, "dp_size", 1) or 1)
    per_mini = tu.get_non_tensor_data(data, PAIRS_KEY, None)
    pairs = [
        float(per_mini[uids[row]]) if per_mini else tu.get_non_tensor_data(data, "global_batch_size", 2) / 2
        for row in chosen
    ]
    scale = [infos[row].pair_weight * dp_size / max(p, 1.0) for row, p in zip(chosen, pairs, strict=True)]
    total, metrics = dpo_nll_loss(
        policy[chosen],
        policy[rejected],
        reference[chosen],
        reference[rejected],
        -policy[chosen] / lengths[chosen],
        beta=beta,
        nll_weight=nll_weight,
        pair_weights=torch.tensor(scale, device=policy.device),
        reduction="sum",
    )
    return total, {**{f"dpo/{k}": float(v) for k, v in metrics.items()}, "dpo/pairs": float(len(chosen))}


@register(FEEDBACK_AGENT)
class FeedbackPairAgentLoop(AgentLoopBase):
    """A user's pair replayed, not sampled: session 1 is its rejected response, every other its chosen one."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        if self.rollout_config.calculate_log_probs:
            raise ValueError("feedback pairs have no rollout log-probs: set rollout.calculate_log_probs=False")
        pair = PromptRow.from_row(kwargs).feedback
        if pair is None:
            raise ValueError(f"a {FEEDBACK_AGENT} row carries no feedback pair: {kwargs.get('extra_info')!r}")
        text = pair.rejected if int(kwargs["session_id"]) == 1 else pair.chosen
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        response_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        response_ids = response_ids[: self.rollout_config.response_length]
        version = int(kwargs.get("global_steps") or 1) - 1  # verl's staleness tags: the servers' weights this step
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=[1] * len(response_ids),
            num_turns=2,
            metrics=AgentLoopMetrics(),
            extra_fields={"turn_scores": [], "tool_rewards": [], "global_steps": version}
            | {"min_global_steps": version, "max_global_steps": version},
        )


@register_trainer("coact_dpo")
class CoActDPOTrainer(CoActTrainer):
    """The CoAct trainer with the pairwise DPO(+NLL) actor loss; with ``coact.feedback.pairs`` it also
    trains on users' votes and edits."""

    def step_hooks(self) -> list[StepHook]:
        hooks = super().step_hooks()
        if self.coact.feedback.pairs and self.oracle is not None:
            hooks.append(FeedbackHook(self.coact.feedback, self.oracle))
        return hooks

    def on_init_end(self) -> None:
        super().on_init_end()
        config, feedback = self.config.actor_rollout_ref, self.coact.feedback.pairs
        problems = dpo_config_problems(config.actor, config.rollout, feedback_pairs=feedback, oracle=bool(self.oracle))
        if problems:
            raise ValueError("coact_dpo trains on pairs of rows; it needs " + "; ".join(problems))
        loss = functools.partial(dpo_loss_fn, beta=self.coact.dpo.beta, nll_weight=self.coact.dpo.nll_weight)
        self.actor_rollout_wg.set_loss_fn(loss)

    def _actor_dp_size(self) -> int:
        group = self.actor_rollout_wg  # as verl's _balance_batch reads it
        if "actor" not in group._dispatch_info:
            group._dispatch_info["actor"] = group._query_dispatch_info("actor")
        return max(group._dispatch_info["actor"]) + 1

    def _pairs_of(self, batch: Any, rows: list[int]) -> list[tuple[int, int]]:
        """(chosen, rejected) batch indices of every uid with both roles, in key order."""
        keys = [batch.keys[i] for i in rows]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        roles = [i.pair_role for i in _infos(tu.get(data, "extra_fields"))]
        chosen, rejected = pair_rows([key.split("_", 1)[0] for key in keys], roles)
        return sorted(
            ((rows[c], rows[r]) for c, r in zip(chosen, rejected, strict=True)), key=lambda p: batch.keys[p[0]]
        )

    def _padding_rows(self, batch: Any, source: int, count: int) -> tuple[list[str], list[dict]]:
        """``count`` synthetic rows in TransferQueue that carry no loss (verl's padding sample, no pair role)."""
        if count == 0:
            return [], []
        source_td = tq.kv_batch_get(keys=[batch.keys[source]], partition_id=batch.partition_id)[0]
        sample, tag = construct_minimal_padding_template(source_td, batch.tags[source], self.tokenizer.eos_token_id)
        response_len = int(source_td["responses"].shape[0])
        for name, value in list(sample.items()):
            if name not in _REBUILT and isinstance(value, torch.Tensor) and value.dim() >= 1:
                if value.shape[0] == response_len:  # per-response-token fields: log-probs, advantages, ...
                    sample[name] = value.new_zeros((1, *value.shape[1:]))
        extra = dict(sample.get("extra_fields") or {})
        no_pair = {ResponseInfo.key("pair_role"): "", ResponseInfo.key("pair_weight"): 0.0}
        extra["reward_extra_info"] = {**(extra.get("reward_extra_info") or {}), **no_pair}
        pad_uid = f"pad{uuid.uuid4().hex}"
        rows = []
        for index in range(count):
            rows.append({**sample, "extra_fields": extra, "uid": pad_uid})
            if "session_id" in sample:
                rows[-1]["session_id"] = index
        keys, tags = [f"{pad_uid}_{index}_0" for index in range(count)], [dict(tag) for _ in range(count)]
        tq.kv_batch_put(
            keys=keys, partition_id=batch.partition_id, fields=tu.list_of_dict_to_tensordict(rows), tags=tags
        )
        return keys, tags

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        """verl's actor update on the batch's pairs only; returns ``batch`` unchanged, so the step's metrics
        still cover every response."""
        config = self.config.actor_rollout_ref
        rows = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        pairs = self._pairs_of(batch, rows)
        num_mini = max(1, len(rows) // (int(config.actor.ppo_mini_batch_size) * int(config.rollout.n)))
        dp_size = self._actor_dp_size()
        order, micro_rows = pair_layout(len(pairs), dp_size, num_mini, int(config.actor.ppo_micro_batch_size_per_gpu))
        per_mini = pairs_per_mini_batch(order, dp_size, num_mini)
        pad_keys, pad_tags = self._padding_rows(batch, rows[0], 2 * order.count(None))
        keys, tags, pads = [], [], iter(range(0, len(pad_keys), 2))
        for slot in order:
            if slot is None:
                start = next(pads)
                keys += pad_keys[start : start + 2]
                tags += pad_tags[start : start + 2]
            else:
                keys += [batch.keys[i] for i in pairs[slot]]
                tags += [batch.tags[i] for i in pairs[slot]]
        uid_of = {slot: batch.keys[pairs[slot][0]].split("_", 1)[0] for slot in per_mini}
        mini_batch_rows = len(keys) // num_mini
        extra_info = {
            **dict(batch.extra_info or {}),
            "calculate_entropy": bool(config.actor.calculate_entropy or config.actor.entropy_coeff != 0.0),
            "distillation_use_topk": False,
            "distillation_only": False,
            "global_batch_size": mini_batch_rows,
            "mini_batch_size": mini_batch_rows,
            "micro_batch_size_per_gpu": micro_rows,
            "epochs": config.actor.ppo_epochs,
            "seed": config.actor.data_loader_seed,
            "dataloader_kwargs": {"shuffle": False},
            "temperature": config.rollout.temperature,
            PAIRS_KEY: {uid_of[slot]: count for slot, count in per_mini.items()},
        }
        pair_batch = KVBatchMeta(
            partition_id=batch.partition_id, keys=keys, tags=tags, fields=batch.fields, extra_info=extra_info
        )
        try:
            output = self.actor_rollout_wg.update_actor(pair_batch)
        finally:
            if pad_keys:
                tq.kv_clear(keys=pad_keys, partition_id=batch.partition_id)
        output = rename_dict(output["metrics"], "actor/")
        output["perf/mfu/actor"] = output.pop("actor/mfu")
        metrics.update(reduce_metrics(output))
        metrics.update({DPO_PAIRS: float(len(pairs)), DPO_UPDATE_ROWS: float(len(keys) - len(pad_keys))})
        return batch
