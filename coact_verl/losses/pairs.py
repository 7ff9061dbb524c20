"""Where DPO pairs sit in a data-parallel actor batch, and how many share each optimizer step.

verl hands each of the D data-parallel ranks a contiguous chunk of the actor batch, splits a rank's chunk
into M contiguous mini-batches (one optimizer step each) and each mini-batch into micro-batches of equal
size. :func:`pair_layout` deals the pairs round-robin over the D × M (rank, mini-batch) slots, each slot
padded to the same even number of rows, so a pair never straddles a boundary; :func:`pairs_per_mini_batch`
gives the loss its exact normaliser, the number of real pairs in each pair's (global) mini-batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def pair_rows(uids: Sequence[str], roles: Sequence[str]) -> tuple[list[int], list[int]]:
    """Row indices of (chosen, rejected) for every uid that has both roles among the rows."""
    chosen: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for row, (uid, role) in enumerate(zip(uids, roles, strict=True)):
        if role == "chosen":
            chosen[uid] = row
        elif role == "rejected":
            rejected[uid] = row
    both = [uid for uid in chosen if uid in rejected]
    return [chosen[u] for u in both], [rejected[u] for u in both]


def pair_layout(
    num_pairs: int, dp_size: int, num_mini_batches: int, micro_batch_size: int
) -> tuple[list[int | None], int]:
    """Where each pair goes in the actor batch (see the module docstring).

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


def pairs_per_mini_batch(order: Sequence[int | None], dp_size: int, num_mini_batches: int) -> dict[int, int]:
    """``{pair index: real pairs in its mini-batch, over all ranks}`` for an ``order`` of :func:`pair_layout`."""
    per_slot = len(order) // (dp_size * num_mini_batches)
    mini_of = {
        index: (position // per_slot) % num_mini_batches for position, index in enumerate(order) if index is not None
    }
    counts = [0] * num_mini_batches
    for mini in mini_of.values():
        counts[mini] += 1
    return {index: counts[mini] for index, mini in mini_of.items()}


def dpo_config_problems(
    actor: Mapping[str, Any], rollout: Mapping[str, Any], *, feedback_pairs: bool, oracle: bool
) -> list[str]:
    """What a verl actor/rollout config (``actor_rollout_ref.actor``/``.rollout``) lacks for pairwise DPO."""
    micro, problems = actor.get("ppo_micro_batch_size_per_gpu"), []
    if micro is None or int(micro) < 2 or int(micro) % 2:
        problems.append(f"an even actor.ppo_micro_batch_size_per_gpu (got {micro}): a pair is two rows")
    if actor.get("shuffle", False) or actor.get("use_dynamic_bsz", False):
        problems.append("actor.shuffle=False and actor.use_dynamic_bsz=False")
    if not actor.get("use_kl_loss", False):
        problems.append("actor.use_kl_loss=True (with kl_loss_coef=0) so the reference worker runs")
    if int(rollout.get("n", 1)) < 2:
        problems.append(f"rollout.n >= 2 (got {rollout.get('n')})")
    if feedback_pairs and rollout.get("calculate_log_probs", False):
        problems.append("rollout.calculate_log_probs=False for feedback pairs")
    if feedback_pairs and not oracle:
        problems.append("an oracle service for coact.feedback.pairs (coact.oracle.url or a router that asks)")
    return problems
