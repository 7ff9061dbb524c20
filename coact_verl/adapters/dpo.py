"""CoAct's DPO(+NLL) objective inside verl's FSDP actor (``trainer.v1.trainer_mode=coact_dpo``).

The group step marks one chosen and one rejected response per labelled group
(``reward_extra_info.coact_pair_role``). :class:`CoActDPOTrainer` replaces the actor's PPO loss with
:func:`dpo_loss_fn` through verl's ``set_loss_fn`` and sorts each batch by key before the update, so the
n responses of a prompt are contiguous; with ``ppo_micro_batch_size_per_gpu`` a multiple of n (checked
at start-up) a group, and so its pair, is never split across micro-batches. Reference log-probs come
from verl's reference worker (``use_kl_loss=True`` with ``kl_loss_coef=0`` turns it on).

Users' preference pairs (votes, edits; :mod:`coact_verl.adapters.feedback`) enter the same way, as a group
whose first two rows are the pair, weighted by ``coact_pair_weight`` (the voter's η̂; 1 for edits and CoAct
pairs).

Per micro-batch the loss is Σ_pairs w·[−log σ(β·margin) + λ·NLL(chosen)/|chosen|] divided by the number of
groups in the mini-batch: verl sums micro-batch gradients, so a mini-batch's update is the mean over its
groups, groups without a pair (unanimous, unlabelled) contributing zero.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import verl.utils.tensordict_utils as tu
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import no_padding_2_padding

from coact_verl.adapters.feedback import CoActFeedbackMixin
from coact_verl.adapters.generation import CoActGenerationMixin
from coact_verl.adapters.late_labels import CoActLateLabelsMixin
from coact_verl.adapters.trainer import CoActMetricsMixin
from coact_verl.losses import dpo_nll_loss


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
    model_output: dict, data: Any, dp_group: Any = None, *, beta: float, nll_weight: float, group_size: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl loss-function contract: ``(model_output, micro-batch TensorDict) -> (loss, metrics)``."""
    log_probs = no_padding_2_padding(model_output["log_probs"], data).float()  # (B, T)
    padded = data.select("response_mask", "ref_log_prob").to_padded_tensor()
    mask = padded["response_mask"].to(log_probs.dtype)
    policy = (log_probs * mask).sum(-1)  # (B,)
    reference = (padded["ref_log_prob"].float() * mask).sum(-1).detach()
    lengths = mask.sum(-1).clamp(min=1.0)
    roles, weights = _pair_fields(data)
    chosen, rejected = pair_rows([str(u) for u in tu.get(data, "uid")], roles)
    groups = max(1.0, float(data["global_batch_size"]) / group_size)
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
    return total / groups, metrics


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
        if int(actor.ppo_micro_batch_size_per_gpu) % n:
            problems.append(f"ppo_micro_batch_size_per_gpu ({actor.ppo_micro_batch_size_per_gpu}) a multiple of n={n}")
        if actor.get("shuffle", False) or actor.get("use_dynamic_bsz", False):
            problems.append("actor.shuffle=False and actor.use_dynamic_bsz=False")
        if not actor.get("use_kl_loss", False):
            problems.append("actor.use_kl_loss=True (with kl_loss_coef=0) so the reference worker runs")
        if self.coact.feedback.pairs and (n < 2 or self.config.actor_rollout_ref.rollout.calculate_log_probs):
            problems.append("rollout.n >= 2 and rollout.calculate_log_probs=False for feedback pairs")
        if problems:
            raise ValueError("coact_dpo keeps each group in one micro-batch; it needs " + "; ".join(problems))
        self.actor_rollout_wg.set_loss_fn(
            functools.partial(dpo_loss_fn, beta=self.coact.dpo.beta, nll_weight=self.coact.dpo.nll_weight, group_size=n)
        )

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        order = sorted(range(len(batch.keys)), key=lambda i: batch.keys[i])
        batch.keys = [batch.keys[i] for i in order]
        batch.tags = [batch.tags[i] for i in order]
        return super()._update_actor(batch, metrics)
