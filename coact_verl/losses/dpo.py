"""Pairwise DPO + NLL loss on per-sequence log-probabilities (CoAct's objective, RPO-style).

For pair p with summed log-probabilities π_c, π_r (policy) and ρ_c, ρ_r (frozen reference) of the chosen and
rejected responses, and NLL_c the mean per-token negative log-likelihood of the chosen response under the
policy:

    margin_p = (π_c − ρ_c) − (π_r − ρ_r)
    loss_p   = −log σ(β · margin_p) + λ · NLL_c

with β = ``DPOConfig.beta`` (CoAct 0.5) and λ = ``DPOConfig.nll_weight`` (CoAct 1.0). All arithmetic runs in
float32 whatever the input dtype, and −log σ uses :func:`torch.nn.functional.logsigmoid`, which is stable for
any margin. Implicit rewards are β·(π − ρ) per response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and mean of token log-probabilities over the response tokens.

    Args:
        token_logps: log p(token), shape ``(B, T)``; values at masked positions are ignored (even ±inf/NaN).
        mask: 1 (or True) for response tokens, shape ``(B, T)``.

    Returns:
        ``(sum, mean)``, both float32 of shape ``(B,)``; the mean of a row with no tokens is 0.
    """
    if token_logps.shape != mask.shape or token_logps.dim() != 2:
        raise ValueError(f"expected token_logps and mask of one shape (B, T), got {token_logps.shape}, {mask.shape}")
    keep = mask.bool()
    values = torch.where(keep, token_logps.float(), torch.zeros((), dtype=torch.float32, device=token_logps.device))
    total = values.sum(dim=-1)
    count = keep.sum(dim=-1).to(torch.float32)
    return total, total / count.clamp_min(1.0)


def dpo_nll_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_nll_mean: torch.Tensor,
    beta: float = 0.5,
    nll_weight: float = 1.0,
    pair_weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO loss plus λ·NLL of the chosen response, per pair or reduced.

    Args:
        policy_chosen_logps: Σ log πθ(y⁺|x), shape ``(P,)``.
        policy_rejected_logps: Σ log πθ(y⁻|x), shape ``(P,)``.
        ref_chosen_logps: Σ log π_ref(y⁺|x), shape ``(P,)`` (no gradient needed).
        ref_rejected_logps: Σ log π_ref(y⁻|x), shape ``(P,)``.
        chosen_nll_mean: −(1/|y⁺|) Σ log πθ(y⁺|x), the per-token NLL of the chosen response, shape ``(P,)``.
        beta: β > 0, the DPO temperature.
        nll_weight: λ ≥ 0, weight of the NLL term.
        pair_weights: optional non-negative weights, shape ``(P,)``.
        reduction: ``"mean"`` (Σ w·loss / Σ w, the plain mean without weights), ``"sum"`` (Σ w·loss) or
            ``"none"`` (w·loss per pair, shape ``(P,)``).

    Returns:
        ``(loss, metrics)``: the float32 loss (scalar, or ``(P,)`` for ``"none"``) and unweighted pair means
        ``dpo_loss``, ``nll``, ``loss`` (= dpo_loss + λ·nll), ``reward_margin`` (β·margin), ``reward_accuracy``
        (share of pairs with margin > 0), ``chosen_reward`` and ``rejected_reward`` (β·(π − π_ref)).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if beta <= 0 or nll_weight < 0:
        raise ValueError("beta must be > 0 and nll_weight >= 0")
    inputs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_nll_mean)
    shape = policy_chosen_logps.shape
    if len(shape) != 1 or any(t.shape != shape for t in inputs):
        raise ValueError(f"all inputs must share one shape (P,), got {[tuple(t.shape) for t in inputs]}")
    pc, pr, rc, rr, nll = (t.float() for t in inputs)

    chosen_reward = beta * (pc - rc)
    rejected_reward = beta * (pr - rr)
    scaled_margin = chosen_reward - rejected_reward
    dpo = -F.logsigmoid(scaled_margin)
    per_pair = dpo + nll_weight * nll

    if pair_weights is None:
        weighted = per_pair
        total_weight = torch.tensor(float(per_pair.numel()), device=per_pair.device)
    else:
        if pair_weights.shape != shape:
            raise ValueError(f"pair_weights must have shape {tuple(shape)}, got {tuple(pair_weights.shape)}")
        w = pair_weights.float()
        weighted = w * per_pair
        total_weight = w.sum()
    if reduction == "none":
        loss = weighted
    elif reduction == "sum":
        loss = weighted.sum()
    else:
        loss = weighted.sum() / total_weight.clamp_min(1e-12)

    with torch.no_grad():
        if per_pair.numel() == 0:
            metrics = dict.fromkeys(
                ("dpo_loss", "nll", "loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward"),
                0.0,
            )
        else:
            metrics = {
                "dpo_loss": dpo.mean().item(),
                "nll": nll.mean().item(),
                "loss": per_pair.mean().item(),
                "reward_margin": scaled_margin.mean().item(),
                "reward_accuracy": (scaled_margin > 0).float().mean().item(),
                "chosen_reward": chosen_reward.mean().item(),
                "rejected_reward": rejected_reward.mean().item(),
            }
    return loss, metrics
