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
        if info and "coact_route" in info and info["coact_route"] != "feedback":  # user pairs: not CoAct groups
            groups.setdefault(uid, []).append(info)
    return groups


def step_metrics(
    infos: Sequence[Mapping[str, Any]],
    uids: Sequence[str],
    gold: Mapping[str, str] | None = None,
    same: Callable[[Sequence[tuple[str | None, str]]], list[bool]] | None = None,
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
    same: Callable[[Sequence[tuple[str | None, str]]], list[bool]],
) -> dict[str, float]:
    """Label precision per source, oracle verdict accuracy and reward accuracy against hidden gold.

    An oracle verdict is right when the answer it accepted is the gold one, or, when it accepted none of
    the candidates, when no response of the group matches the gold answer.
    """
    checked = [(rows, gold.get(str(rows[0].get("coact_prompt_id", "")))) for rows in groups.values()]
    checked = [(rows, answer) for rows, answer in checked if answer is not None]
    pairs: list[tuple[str | None, str]] = []
    for rows, answer in checked:
        pairs.append((rows[0]["coact_label"] or None, answer))
        pairs.extend((row["coact_pred"] or None, answer) for row in rows)
    verdicts = iter(same(pairs)) if pairs else iter(())
    hits: dict[str, list[bool]] = {"self": [], "oracle": []}
    reward_agree: list[bool] = []
    gold_hits: list[bool] = []
    for rows, _ in checked:
        label_ok = next(verdicts)
        preds_ok = [next(verdicts) for _ in rows]
        source = rows[0]["coact_label_source"]
        if source == "self":
            hits["self"].append(label_ok)
        elif source == "oracle":
            hits["oracle"].append(label_ok if rows[0]["coact_label"] else not any(preds_ok))
        if source != "none":
            reward_agree.extend((float(r["coact_reward"]) > 0.5) == ok for r, ok in zip(rows, preds_ok, strict=True))
            gold_hits.extend(preds_ok)
    metrics: dict[str, float] = {}
    for source, name in (("self", "coact/self_label/precision"), ("oracle", "coact/oracle/label_accuracy")):
        if hits[source]:
            metrics[name] = sum(hits[source]) / len(hits[source])
    if reward_agree:
        metrics["coact/reward/accuracy"] = sum(reward_agree) / len(reward_agree)
        metrics["coact/reward/gold_acc"] = sum(gold_hits) / len(gold_hits)
    return metrics
