"""CoAct's DPO(+NLL) objective inside verl's FSDP actor (``trainer.v1.trainer_mode=coact_dpo``).

The group step marks one chosen and one rejected response per labelled group
(``reward_extra_info.coact_pair_role``). :class:`CoActDPOTrainer` replaces the actor's PPO loss with
:func:`dpo_loss_fn` through verl's ``set_loss_fn``, and its actor update trains on the pairs only: the other
n − 2 responses of a group (and every response of a group without a pair) stay out of the actor's forward
and backward. Each pair's two rows are placed side by side (:func:`pair_layout`) so that no data-parallel
rank, mini-batch or micro-batch boundary splits a pair; a micro-batch then only needs an even size, not n
sequences. Slots that the pairs do not fill take verl's synthetic padding rows (127 prompt tokens, one
response token) without a pair role: they carry no loss. Reference log-probs come from verl's reference worker
(``use_kl_loss=True`` with ``kl_loss_coef=0`` turns it on).

Users' preference pairs (votes, edits; :mod:`coact_verl.adapters.feedback`) enter the same way, as a group
whose first two rows are the pair, weighted by ``coact_pair_weight`` (the voter's η̂; 1 for edits and CoAct
pairs).

**Scaling across data-parallel ranks.** verl sums the gradients of a mini-batch's micro-batches, and FSDP
averages them over the D data-parallel ranks. Like verl's own losses (``agg_loss``: local sum / global size
× ``dp_size``), each micro-batch returns Σ_its pairs w·[−log σ(β·margin) + λ·NLL(chosen)/|chosen|] × D / P,
with P the number of pairs in the (global) mini-batch (exact with one mini-batch per step; with several, P
is the step's pairs over the mini-batch count, and the pairs are dealt evenly). The update is then the
weighted mean over the mini-batch's pairs whatever D is, and gradient clipping and the logged grad norm see
that mean. The old log-prob and reference passes still run on every response (verl computes them before
the pairs are known to the update).
"""

from __future__ import annotations

import functools
import math
import uuid
from typing import Any

import torch
import transfer_queue as tq
import verl.utils.tensordict_utils as tu
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.padding_utils import construct_minimal_padding_template
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict
from verl.workers.utils.padding import no_padding_2_padding

from coact_verl.adapters.feedback import CoActFeedbackMixin
from coact_verl.adapters.generation import CoActGenerationMixin
from coact_verl.adapters.late_labels import CoActLateLabelsMixin
from coact_verl.adapters.trainer import CoActMetricsMixin
from coact_verl.losses import dpo_nll_loss

#: Non-tensor key of the actor batch: real pairs per (global) mini-batch, the loss's normaliser.
PAIRS_KEY = "coact_dpo_pairs_per_mini_batch"
#: Fields the padding template rebuilds at its own length; other per-token fields are zeroed to match.
_REBUILT = {"prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "loss_mask"}


def pair_rows(uids: list[str], roles: list[str]) -> tuple[list[int], list[int]]:
    """Row indices of (chosen, rejected) for every uid that has both roles in this micro-batch."""
    chosen: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for row, (uid, role) in enumerate(zip(uids, roles, strict=True)):
        if role == "chosen":
            chosen[uid] = row
        elif role == "rejected":
            rejected[uid] = row
    both = [uid for uid in chosen if uid in rejected]
    return [chosen[u] for u in both], [rejected[u] for u in both]


def _pair_fields(data: Any) -> tuple[list[str], list[float]]:
    """Per row: ``coact_pair_role`` and ``coact_pair_weight`` (1 when absent) of the group step."""
    infos = [((e or {}).get("reward_extra_info") or {}) for e in (tu.get(data, "extra_fields") or [])]
    return [str(i.get("coact_pair_role", "")) for i in infos], [float(i.get("coact_pair_weight", 1.0)) for i in infos]


def dpo_loss_fn(
    model_output: dict, data: Any, dp_group: Any = None, *, beta: float, nll_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl loss-function contract: ``(model_output, micro-batch TensorDict) -> (loss, metrics)``.

    The loss is this micro-batch's pair sum × ``dp_size`` / (pairs per global mini-batch); see the module
    docstring. The normaliser is ``coact_dpo_pairs_per_mini_batch`` when the trainer set it, else
    ``global_batch_size / 2`` (every row of the mini-batch in a pair).
    """
    log_probs = no_padding_2_padding(model_output["log_probs"], data).float()  # (B, T)
    padded = data.select("response_mask", "ref_log_prob").to_padded_tensor()
    mask = padded["response_mask"].to(log_probs.dtype)
    policy = (log_probs * mask).sum(-1)  # (B,)
    reference = (padded["ref_log_prob"].float() * mask).sum(-1).detach()
    lengths = mask.sum(-1).clamp(min=1.0)
    roles, weights = _pair_fields(data)
    chosen, rejected = pair_rows([str(u) for u in tu.get(data, "uid")], roles)
    dp_size = int(tu.get_non_tensor_data(data, "dp_size", 1) or 1)
    pairs = tu.get_non_tensor_data(data, PAIRS_KEY, None)
    if pairs is None:
        pairs = float(tu.get_non_tensor_data(data, "global_batch_size", 2 * max(len(chosen), 1))) / 2
    if not chosen:
        zero = 0.0 * policy.sum()  # keeps the graph: verl calls backward on every micro-batch
        return zero, {"dpo/pairs": 0.0}
    total, metrics = dpo_nll_loss(
        policy[chosen],
        policy[rejected],
        reference[chosen],
        reference[rejected],
        -policy[chosen] / lengths[chosen],
        beta=beta,
        nll_weight=nll_weight,
        pair_weights=torch.tensor([weights[row] for row in chosen], device=policy.device),
        reduction="sum",
    )
    metrics = {f"dpo/{k}": float(v) for k, v in metrics.items()}
    metrics["dpo/pairs"] = float(len(chosen))
    return total * (dp_size / max(float(pairs), 1.0)), metrics


def pair_layout(num_pairs: int, dp_size: int, num_mini_batches: int, micro_batch_size: int):
    """Where each pair goes in the actor batch.

    verl hands each data-parallel rank a contiguous chunk of the batch, splits a rank's chunk into
    ``num_mini_batches`` contiguous mini-batches and each mini-batch into micro-batches of
    ``micro_batch_size`` rows, all of equal size. Pairs are dealt round-robin over the D × M (rank,
    mini-batch) slots, each slot padded to the same even number of rows, so a pair never straddles a
    boundary.

    Returns:
        ``(order, micro_rows)``: per pair slot in batch order the pair's index or ``None`` (a padding pair),
        and the micro-batch size in rows (``micro_batch_size``, or less when a slot holds fewer rows).
    """
    if micro_batch_size < 2 or micro_batch_size % 2:
        raise ValueError(f"the DPO micro-batch size must be even, got {micro_batch_size}")
    slots = dp_size * num_mini_batches
    rows = 2 * max(1, math.ceil(num_pairs / slots))
    if rows <= micro_batch_size:
        micro_rows = rows
    else:
        micro_rows = micro_batch_size
        rows = math.ceil(rows / micro_batch_size) * micro_batch_size
    per_slot = rows // 2
    dealt: list[list[int | None]] = [[] for _ in range(slots)]
    for index in range(num_pairs):
        dealt[index % slots].append(index)
    order: list[int | None] = []
    for slot in dealt:
        order.extend(slot + [None] * (per_slot - len(slot)))
    return order, micro_rows


@register_trainer("coact_dpo")
class CoActDPOTrainer(
    CoActFeedbackMixin, CoActLateLabelsMixin, CoActGenerationMixin, CoActMetricsMixin, PPOTrainerSync
):
    """Synchronous CoAct trainer with the pairwise DPO(+NLL) actor loss (prompt pool and late labels as in
    ``coact``); with ``coact.feedback.pairs`` it also trains on users' votes and edits."""

    def on_init_end(self) -> None:
        super().on_init_end()
        actor = self.config.actor_rollout_ref.actor
        n = int(self.config.actor_rollout_ref.rollout.n)
        problems = []
        micro = actor.get("ppo_micro_batch_size_per_gpu")
        if micro is None or int(micro) < 2 or int(micro) % 2:
            problems.append(f"an even actor.ppo_micro_batch_size_per_gpu (got {micro}): a pair is two rows")
        if actor.get("shuffle", False) or actor.get("use_dynamic_bsz", False):
            problems.append("actor.shuffle=False and actor.use_dynamic_bsz=False")
        if not actor.get("use_kl_loss", False):
            problems.append("actor.use_kl_loss=True (with kl_loss_coef=0) so the reference worker runs")
        if n < 2:
            problems.append(f"rollout.n >= 2 (got {n})")
        if self.coact.feedback.pairs and self.config.actor_rollout_ref.rollout.calculate_log_probs:
            problems.append("rollout.calculate_log_probs=False for feedback pairs")
        if problems:
            raise ValueError("coact_dpo trains on pairs of rows; it needs " + "; ".join(problems))
        self.actor_rollout_wg.set_loss_fn(
            functools.partial(dpo_loss_fn, beta=self.coact.dpo.beta, nll_weight=self.coact.dpo.nll_weight)
        )

    def _actor_dp_size(self) -> int:
        group = self.actor_rollout_wg
        if "actor" not in group._dispatch_info:
            group._dispatch_info["actor"] = group._query_dispatch_info("actor")
        return max(group._dispatch_info["actor"]) + 1

    def _pairs_of(self, batch: Any, rows: list[int]) -> list[tuple[int, int]]:
        """(chosen, rejected) batch indices of every uid with both roles, in key order."""
        keys = [batch.keys[i] for i in rows]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        extra = data["extra_fields"]
        extra = extra.tolist() if hasattr(extra, "tolist") else list(extra)
        roles = [str(((e or {}).get("reward_extra_info") or {}).get("coact_pair_role", "")) for e in extra]
        chosen, rejected = pair_rows([key.split("_", 1)[0] for key in keys], roles)
        pairs = [(rows[c], rows[r]) for c, r in zip(chosen, rejected, strict=True)]
        return sorted(pairs, key=lambda pair: batch.keys[pair[0]])

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
        info = dict(extra.get("reward_extra_info") or {})
        extra["reward_extra_info"] = {**info, "coact_pair_role": "", "coact_pair_weight": 0.0}
        sample["extra_fields"] = extra
        pad_uid = f"pad{uuid.uuid4().hex}"
        sample["uid"] = pad_uid
        keys, fields = [], []
        for index in range(count):
            row = dict(sample)
            if "session_id" in row:
                row["session_id"] = index
            keys.append(f"{pad_uid}_{index}_0")
            fields.append(row)
        tags = [dict(tag) for _ in range(count)]
        tq.kv_batch_put(
            keys=keys, partition_id=batch.partition_id, fields=tu.list_of_dict_to_tensordict(fields), tags=tags
        )
        return keys, tags

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        """verl's actor update on the batch's pairs only (layout in :func:`pair_layout`); returns ``batch``
        unchanged, so the step's metrics still cover every response."""
        config = self.config.actor_rollout_ref
        n = int(config.rollout.n)
        rows = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        pairs = self._pairs_of(batch, rows)
        num_mini = max(1, len(rows) // (int(config.actor.ppo_mini_batch_size) * n))
        dp_size = self._actor_dp_size()
        order, micro_rows = pair_layout(len(pairs), dp_size, num_mini, int(config.actor.ppo_micro_batch_size_per_gpu))
        pad_keys, pad_tags = self._padding_rows(batch, rows[0], 2 * order.count(None))
        keys, tags, next_pad = [], [], 0
        for slot in order:
            if slot is None:
                keys += pad_keys[next_pad : next_pad + 2]
                tags += pad_tags[next_pad : next_pad + 2]
                next_pad += 2
            else:
                keys += [batch.keys[i] for i in pairs[slot]]
                tags += [batch.tags[i] for i in pairs[slot]]
        mini_batch_rows = len(keys) // num_mini
        calculate_entropy = bool(config.actor.calculate_entropy or config.actor.entropy_coeff != 0.0)
        extra_info = {
            **dict(batch.extra_info or {}),
            "calculate_entropy": calculate_entropy,
            "distillation_use_topk": False,
            "distillation_only": False,
            "global_batch_size": mini_batch_rows,
            "mini_batch_size": mini_batch_rows,
            "micro_batch_size_per_gpu": micro_rows,
            "epochs": config.actor.ppo_epochs,
            "seed": config.actor.data_loader_seed,
            "dataloader_kwargs": {"shuffle": False},
            "temperature": config.rollout.temperature,
            PAIRS_KEY: len(pairs) / num_mini,
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
        metrics.update(
            {"coact/dpo/pairs": float(len(pairs)), "coact/dpo/update_rows": float(len(keys) - len(pad_keys))}
        )
        return batch
