"""CoAct step metrics on a hand-built batch (values worked out in the comments)."""

from __future__ import annotations

import pytest

from coact_verl.metrics import step_metrics
from coact_verl.records import ResponseInfo


def _row(pid, route, source, label, pred, reward, agreement, status="not_asked"):
    info = ResponseInfo(
        prompt_id=pid,
        route=route,
        label_source=source,
        label=label,
        pred=pred,
        reward=reward,
        agreement=agreement,
        oracle_status=status,
    )
    return info.to_extra_info()


def _same(pairs):
    return [a is not None and a == b for a, b in pairs]


def test_step_metrics_with_gold():
    rows = [
        # group A: self-labelled "4" (right), preds 4, 4, 5 -> rewards 1, 1, 0 all agree with gold
        _row("A", "self", "self", "4", "4", 1.0, 2 / 3),
        _row("A", "self", "self", "4", "4", 1.0, 2 / 3),
        _row("A", "self", "self", "4", "5", 0.0, 2 / 3),
        # group B: self-labelled "7" (wrong, gold 8): preds 7, 7, 8 -> rewards 1, 1, 0, all three disagree
        _row("B", "self", "self", "7", "7", 1.0, 2 / 3),
        _row("B", "self", "self", "7", "7", 1.0, 2 / 3),
        _row("B", "self", "self", "7", "8", 0.0, 2 / 3),
        # group C: oracle found no correct candidate and none matches gold 9 -> verdict right
        _row("C", "oracle", "oracle", "", "1", 0.0, 1 / 3, "labeled"),
        _row("C", "oracle", "oracle", "", "2", 0.0, 1 / 3, "labeled"),
        _row("C", "oracle", "oracle", "", "", 0.0, 1 / 3, "labeled"),
        # group D: dropped, ignored by label/reward accuracy
        _row("D", "drop", "none", "", "3", 0.0, 1 / 3),
        _row("D", "drop", "none", "", "6", 0.0, 1 / 3),
        _row("D", "drop", "none", "", "", 0.0, 1 / 3),
    ]
    uids = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
    m = step_metrics(rows, uids, gold={"A": "4", "B": "8", "C": "9", "D": "3"}, same=_same)
    assert m["coact/groups"] == 4
    assert m["coact/agreement/mean"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 3) / 4)
    assert m["coact/agreement/hist_le_0.5"] == 0.5 and m["coact/agreement/hist_le_0.75"] == 0.5
    assert m["coact/route/self_frac"] == 0.5 and m["coact/route/oracle_frac"] == 0.25
    assert m["coact/route/drop_frac"] == 0.25 and m["coact/labelled_frac"] == 0.75
    assert m["coact/self_label/precision"] == 0.5
    assert m["coact/oracle/label_accuracy"] == 1.0
    assert m["coact/oracle/status_labeled"] == 1.0
    # reward agrees with gold correctness on A (3/3) and C (3/3), not on B (0/3)
    assert m["coact/reward/accuracy"] == pytest.approx(6 / 9)
    assert m["coact/reward/gold_acc"] == pytest.approx(3 / 9)


def test_without_gold_only_routing_metrics():
    m = step_metrics([_row("A", "self", "self", "4", "4", 1.0, 1.0)], ["a"])
    assert m["coact/route/self_frac"] == 1.0 and "coact/self_label/precision" not in m
    assert step_metrics([{}], ["a"]) == {}


def test_majority_confirmed_counts_router_sent_groups_labelled_with_their_majority():
    def info(pid, cluster, reason="low_agreement", source="oracle", route="oracle"):
        return ResponseInfo(
            prompt_id=pid, route=route, route_reason=reason, label_source=source, label_cluster=cluster
        ).to_extra_info()

    rows = [
        info("A", 0),  # the oracle confirmed the majority
        info("B", 1),  # the oracle picked another cluster
        info("C", -1),  # no response was right
        info("D", 0, reason="pool_label"),  # a pool prompt's carried label: the router was not asked
        info("E", 0, source="self", route="self", reason="majority"),
        info("F", 0, reason="audit"),
    ]
    m = step_metrics(rows, ["a", "b", "c", "d", "e", "f"])
    assert m["coact/oracle/majority_confirmed"] == 2.0


def test_gold_metrics_are_estimated_on_a_bounded_sample_that_ignores_batch_order():
    import random

    rows, uids, gold = [], [], {}
    for g in range(1000):  # self-labelled groups of 4; the label is right in every third group
        gold[f"P{g}"] = "1"
        label = "1" if g % 3 == 0 else "2"
        for _ in range(4):
            rows.append(_row(f"P{g}", "self", "self", label, label, 1.0, 1.0))
            uids.append(f"u{g}")
    calls = []

    def counting_same(pairs):
        calls.append(len(pairs))
        return _same(pairs)

    m = step_metrics(rows, uids, gold=gold, same=counting_same, gold_groups=100)
    assert m["coact/gold/groups"] == 100 and calls == [100 * 5]  # the label and 4 answers per sampled group
    assert m["coact/self_label/precision"] == pytest.approx(1 / 3, abs=0.12)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    shuffled = step_metrics([rows[i] for i in order], [uids[i] for i in order], gold=gold, same=_same, gold_groups=100)
    assert shuffled["coact/self_label/precision"] == m["coact/self_label/precision"]
    assert step_metrics(rows, uids, gold=gold, same=_same)["coact/gold/groups"] == 1000  # 0: every group
