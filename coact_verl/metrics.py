"""CoAct step metrics from the per-response ``reward_extra_info`` that the group step writes.

Gold answers, where a run has them, are used here only to *measure* (self-label precision, oracle
accuracy, reward accuracy); nothing here feeds back into rewards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

AGREEMENT_BINS = (0.25, 0.5, 0.75, 1.0)


def _group_rows(infos: Sequence[Mapping[str, Any]], uids: Sequence[str]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for uid, info in zip(uids, infos, strict=True):
        if info and "coact_route" in info:
            groups.setdefault(uid, []).append(info)
    return groups


def step_metrics(
    infos: Sequence[Mapping[str, Any]],
    uids: Sequence[str],
    gold: Mapping[str, str] | None = None,
    same: Callable[[Sequence[tuple[str, str]]], list[bool]] | None = None,
) -> dict[str, float]:
    """Aggregate one training batch.

    Args:
        infos: ``reward_extra_info`` of each response, shape ``(B,)``.
        uids: the group (prompt) uid of each response, shape ``(B,)``.
        gold: hidden gold answers by ``coact_prompt_id`` (metrics only), or ``None``.
        same: batch equivalence test over ``(a, b)`` pairs, required with ``gold``.

    Returns:
        ``coact/...`` metrics: agreement mean and histogram, route fractions, label sources, oracle
        statuses, and with gold: self-label precision, oracle label accuracy, reward accuracy.
    """
    groups = _group_rows(infos, uids)
    if not groups:
        return {}
    heads = [rows[0] for rows in groups.values()]
    count = len(heads)
    metrics: dict[str, float] = {"coact/groups": float(count)}
    agreements = [float(h["coact_agreement"]) for h in heads]
    metrics["coact/agreement/mean"] = sum(agreements) / count
    lower = 0.0
    for upper in AGREEMENT_BINS:
        inside = sum(1 for a in agreements if lower < a <= upper or (lower == 0.0 and a == 0.0))
        metrics[f"coact/agreement/hist_le_{upper:g}"] = inside / count
        lower = upper
    routes = Counter(h["coact_route"] for h in heads)
    for route in ("self", "oracle", "drop"):
        metrics[f"coact/route/{route}_frac"] = routes.get(route, 0) / count
    for status, value in Counter(h["coact_oracle_status"] for h in heads).items():
        if status != "not_asked":
            metrics[f"coact/oracle/status_{status}"] = float(value)
    labelled = [h for h in heads if h["coact_label_source"] != "none"]
    metrics["coact/labelled_frac"] = len(labelled) / count
    if gold and same is not None:
        metrics.update(_gold_metrics(groups, gold, same))
    return metrics


def _gold_metrics(
    groups: Mapping[str, list[Mapping[str, Any]]],
    gold: Mapping[str, str],
    same: Callable[[Sequence[tuple[str, str]]], list[bool]],
) -> dict[str, float]:
    label_pairs, label_sources, reward_pairs, rewards = [], [], [], []
    for rows in groups.values():
        answer = gold.get(str(rows[0].get("coact_prompt_id", "")))
        if answer is None:
            continue
        head = rows[0]
        if head["coact_label_source"] != "none" and head["coact_label"]:
            label_pairs.append((head["coact_label"], answer))
            label_sources.append(head["coact_label_source"])
        if head["coact_label_source"] != "none":
            for row in rows:
                reward_pairs.append((row["coact_pred"] or None, answer))
                rewards.append(float(row["coact_reward"]))
    verdicts = same(label_pairs + reward_pairs) if label_pairs or reward_pairs else []
    label_ok, reward_ok = verdicts[: len(label_pairs)], verdicts[len(label_pairs) :]
    metrics: dict[str, float] = {}
    for source, name in (("self", "coact/self_label/precision"), ("oracle", "coact/oracle/label_accuracy")):
        hits = [ok for ok, s in zip(label_ok, label_sources, strict=True) if s == source]
        if hits:
            metrics[name] = sum(hits) / len(hits)
    if rewards:
        agree = [(r > 0.5) == bool(ok) for r, ok in zip(rewards, reward_ok, strict=True)]
        metrics["coact/reward/accuracy"] = sum(agree) / len(agree)
        metrics["coact/reward/gold_acc"] = sum(bool(ok) for ok in reward_ok) / len(reward_ok)
    return metrics
