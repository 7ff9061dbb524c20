"""``coact-verl route``: saved (scored) rollouts routed as training would route them."""

import json

import pytest

from coact_verl.cli import main
from coact_verl.config import RouterConfig
from coact_verl.router.cli import route_rollouts
from coact_verl.router.simulate import simulate_rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("mode", ["step", "online"])
def test_route_writes_one_line_per_group_and_a_summary(tmp_path, capsys, mode):
    rows = simulate_rows(300, 4, seed=0)
    src, out, summary_path = tmp_path / "scored.jsonl", tmp_path / "routes.jsonl", tmp_path / "summary.json"
    _write(src, rows)
    argv = ["route", "--in", str(src), "--out", str(out), "--mode", mode, "--budget", "0.2", "--step-size", "50"]
    assert main([*argv, "--policy", "lowest_agreement", "--summary", str(summary_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads(summary_path.read_text())
    lines = _lines(out)
    assert [line["id"] for line in lines] == [r["id"] for r in rows]  # file order
    assert set(lines[0]) == {"id", "step", "action", "reason", "band", "agreement"}
    assert {line["step"] for line in lines} == set(range(6))
    assert summary["budget"] == 60 and summary["spent"] == sum(line["action"] == "oracle" for line in lines)
    assert summary["spent"] >= 0.98 * summary["budget"]
    assert sum(summary["actions"].values()) == 300
    assert summary["reasons"]["oracle/low_agreement"] == summary["spent"]
    wrong = sum(not r["majority_correct"] for r in rows)
    assert summary["wrong_majorities"] == wrong
    caught = sum(line["action"] == "oracle" and not r["majority_correct"] for line, r in zip(lines, rows, strict=True))
    assert summary["wrong_majorities_caught"] == caught
    assert 0 < summary["caught_of_best"] <= 1 and summary["best_possible"] <= summary["budget"]
    for line in lines:
        if line["band"] == "unanimous":
            assert line["action"] != "oracle"


def test_route_shuffle_is_seeded_and_policies_differ(tmp_path):
    rows = simulate_rows(256, 8, seed=1)
    cfg = RouterConfig(policy="coact", seed=4)
    a, _ = route_rollouts(rows, cfg, step_size=64, shuffle=True)
    b, _ = route_rollouts(rows, cfg, step_size=64, shuffle=True)
    c, _ = route_rollouts(rows, cfg, step_size=64)
    assert a == b and [r["id"] for r in a] != [r["id"] for r in c]
    _, coact = route_rollouts(rows, RouterConfig(policy="coact"), step_size=64)
    _, lowest = route_rollouts(rows, RouterConfig(policy="lowest_agreement"), step_size=64)
    assert coact["reasons"].get("oracle/knn", 0) > 0 and "oracle/knn" not in lowest["reasons"]
    assert coact["reference_size"] > 0  # gold feedback grows the reference set of confirmed majorities


def test_route_reads_real_score_output_without_gold(tmp_path, capsys):
    from coact_verl.consistency.offline import score_rollouts

    raw, scored, out = tmp_path / "raw.jsonl", tmp_path / "scored.jsonl", tmp_path / "routes.jsonl"
    rows = [
        {"id": "a", "prompt": "What is 2+2?", "responses": ["#### 4", "#### 4", "#### 5", "#### 4"]},
        {"id": "b", "prompt": "What is 3+3?", "responses": ["#### 6"] * 4},
        {"id": "c", "prompt": "What is 7*8?", "responses": ["#### 54", "#### 56", "#### 58", "#### 60"]},
    ]
    _write(raw, rows)
    score_rollouts(raw, scored, "gsm8k")
    assert main(["route", "--in", str(scored), "--out", str(out), "--budget", "0.34", "--step-size", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = {line["id"]: line for line in _lines(out)}
    assert lines["c"]["action"] == "oracle" and lines["c"]["band"] == "low"
    assert lines["b"]["band"] == "unanimous" and lines["a"]["band"] == "self"
    assert summary["spent"] == 1 and "wrong_majorities" not in summary


def test_route_rejects_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "responses": ["x"]}\n')
    assert main(["route", "--in", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "agreement" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["step", "online"])
def test_default_policy_spends_labels_on_wrong_majorities(mode):
    """Four samples per prompt from a weak model whose wrong answers mostly scatter (as on GSM8K): the default
    router's labels land on wrong majorities nearly as often as they could; CoAct's fixed k-NN half does not."""
    rows = simulate_rows(1024, 4, seed=3, skill=(1.2, 2.0), confident_wrong=(0.5, 3.0))
    caught = {}
    for policy in (RouterConfig().policy, "coact"):
        _, summary = route_rollouts(rows, RouterConfig(policy=policy), mode=mode, step_size=64, shuffle=True)
        assert summary["spent"] >= 0.98 * summary["budget"]
        caught[policy] = summary["caught_of_best"]
    assert caught[RouterConfig().policy] >= 0.8 and caught[RouterConfig().policy] > caught["coact"] + 0.05, caught


@pytest.mark.parametrize("mode", ["step", "online"])
def test_the_summary_counts_the_budget_the_policy_could_spend(mode):
    """A strong model: in each step of 10 groups (2 labels) only one group disagrees. The default policy never
    routes unanimous groups, so it can spend 1 label a step: spent_ratio 0.5, all of the spendable budget."""
    rows = []
    for i in range(40):
        sizes = [5, 3] if i % 10 == 7 else [8]
        rows.append({"id": i, "n": 8, "cluster_sizes": sizes, "agreement": sizes[0] / 8, "majority_correct": True})
    for policy, spendable in (("lowest_agreement", 4), ("random", 8)):
        _, summary = route_rollouts(rows, RouterConfig(policy=policy), mode=mode, step_size=10)
        assert summary["budget"] == 8 and summary["spendable"] == spendable, summary
        assert summary["spent"] == spendable and summary["spent_of_spendable"] == 1.0
    _, summary = route_rollouts(rows, RouterConfig(spot_check_rate=0.5), mode=mode, step_size=10)
    assert summary["spendable"] == 8  # spot checks may send unanimous groups
