"""CoAct step metrics from the per-response ``reward_extra_info`` that the group step writes.

Gold answers, where a run has them, are used here only to *measure* (self-label precision, oracle
accuracy, reward accuracy); nothing here feeds back into rewards.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coact_verl import metric_keys as keys
from coact_verl.records import (
    ORACLE_NOT_ASKED,
    REASON_POOL_LABEL,
    ROUTE_DROP,
    ROUTE_FEEDBACK,
    ROUTE_ORACLE,
    ROUTE_SELF,
    SOURCE_NONE,
    SOURCE_ORACLE,
    SOURCE_SELF,
    ResponseInfo,
)

AGREEMENT_BINS = (0.25, 0.5, 0.75, 1.0)


def _group_rows(infos: Sequence[Mapping[str, Any]], uids: Sequence[str]) -> dict[str, list[ResponseInfo]]:
    groups: dict[str, list[ResponseInfo]] = {}
    for uid, raw in zip(uids, infos, strict=True):
        if not ResponseInfo.is_coact(raw):
            continue
        info = ResponseInfo.from_extra_info(raw)
        if info.route != ROUTE_FEEDBACK:  # user pairs: not CoAct groups
            groups.setdefault(uid, []).append(info)
    return groups


def step_metrics(
    infos: Sequence[Mapping[str, Any]],
    uids: Sequence[str],
    gold: Mapping[str, str] | None = None,
    same: Callable[[Sequence[tuple[str | None, str]]], list[bool]] | None = None,
    gold_groups: int = 0,
) -> dict[str, float]:
    """Aggregate one training batch.

    Args:
        infos: ``reward_extra_info`` of each response (:class:`~coact_verl.records.ResponseInfo`), shape ``(B,)``.
        uids: the group (prompt) uid of each response, shape ``(B,)``.
        gold: hidden gold answers by prompt id (metrics only), or ``None``.
        same: batch equivalence test over ``(a, b)`` pairs, required with ``gold``.
        gold_groups: the gold metrics are estimated on at most this many groups (0: every group), a sample that is
            uniform and the same whatever the batch order (the groups whose uid hashes lowest), so that measuring
            stays a bounded cost of the step whatever the batch size and answer format.

    Returns:
        ``coact/...`` metrics (:mod:`coact_verl.metric_keys`): agreement mean and histogram, route fractions,
        label sources, oracle statuses, and with gold: self-label precision, oracle label accuracy, reward accuracy.
    """
    groups = _group_rows(infos, uids)
    if not groups:
        return {}
    heads = [rows[0] for rows in groups.values()]
    count = len(heads)
    metrics: dict[str, float] = {keys.GROUPS: float(count)}
    agreements = [h.agreement for h in heads]
    metrics[keys.AGREEMENT_MEAN] = sum(agreements) / count
    lower = 0.0
    for upper in AGREEMENT_BINS:
        inside = sum(1 for a in agreements if lower < a <= upper or (lower == 0.0 and a == 0.0))
        metrics[keys.AGREEMENT_HIST.format(upper=f"{upper:g}")] = inside / count
        lower = upper
    routes = Counter(h.route for h in heads)
    for route in (ROUTE_SELF, ROUTE_ORACLE, ROUTE_DROP):
        metrics[keys.ROUTE_FRAC.format(route=route)] = routes.get(route, 0) / count
    for status, value in Counter(h.oracle_status for h in heads).items():
        if status != ORACLE_NOT_ASKED:
            metrics[keys.ORACLE_STATUS.format(status=status)] = float(value)
    routed = [h for h in heads if h.route == ROUTE_ORACLE and h.route_reason != REASON_POOL_LABEL]
    confirmed = [h for h in routed if h.label_source == SOURCE_ORACLE and h.label_cluster == 0]
    metrics[keys.ORACLE_CONFIRMED] = float(len(confirmed))
    labelled = [h for h in heads if h.label_source != SOURCE_NONE]
    metrics[keys.LABELLED_FRAC] = len(labelled) / count
    if gold and same is not None:
        checked = {uid: rows for uid, rows in groups.items() if rows[0].prompt_id in gold}
        if 0 < gold_groups < len(checked):
            kept = sorted(checked, key=lambda uid: zlib.crc32(uid.encode()))[:gold_groups]
            checked = {uid: checked[uid] for uid in kept}
        metrics[keys.GOLD_GROUPS] = float(len(checked))
        metrics.update(_gold_metrics(checked, gold, same))
    return metrics


def _gold_metrics(
    groups: Mapping[str, list[ResponseInfo]],
    gold: Mapping[str, str],
    same: Callable[[Sequence[tuple[str | None, str]]], list[bool]],
) -> dict[str, float]:
    """Label precision per source, oracle verdict accuracy and reward accuracy against hidden gold.

    An oracle verdict is right when the answer it accepted is the gold one, or, when it accepted none of
    the candidates, when no response of the group matches the gold answer.
    """
    checked = [(rows, gold[rows[0].prompt_id]) for rows in groups.values() if rows[0].prompt_id in gold]
    pairs: list[tuple[str | None, str]] = []
    for rows, answer in checked:
        pairs.append((rows[0].label or None, answer))
        pairs.extend((row.pred or None, answer) for row in rows)
    verdicts = iter(same(pairs)) if pairs else iter(())
    hits: dict[str, list[bool]] = {SOURCE_SELF: [], SOURCE_ORACLE: []}
    reward_agree: list[bool] = []
    gold_hits: list[bool] = []
    for rows, _ in checked:
        label_ok = next(verdicts)
        preds_ok = [next(verdicts) for _ in rows]
        source = rows[0].label_source
        if source == SOURCE_SELF:
            hits[SOURCE_SELF].append(label_ok)
        elif source == SOURCE_ORACLE:
            hits[SOURCE_ORACLE].append(label_ok if rows[0].label else not any(preds_ok))
        if source != SOURCE_NONE:
            reward_agree.extend((r.reward > 0.5) == ok for r, ok in zip(rows, preds_ok, strict=True))
            gold_hits.extend(preds_ok)
    metrics: dict[str, float] = {}
    for source, name in ((SOURCE_SELF, keys.SELF_LABEL_PRECISION), (SOURCE_ORACLE, keys.ORACLE_LABEL_ACCURACY)):
        if hits[source]:
            metrics[name] = sum(hits[source]) / len(hits[source])
    if reward_agree:
        metrics[keys.REWARD_ACCURACY] = sum(reward_agree) / len(reward_agree)
        metrics[keys.REWARD_GOLD_ACC] = sum(gold_hits) / len(gold_hits)
    return metrics
