"""Step hooks without verl: plain lists in, metrics and rows out, state through a checkpoint folder."""

from __future__ import annotations

import asyncio

import pytest

from coact_verl.config import ConsistencyConfig, FeedbackConfig, GenerationConfig
from coact_verl.consistency import AnswerClusterer
from coact_verl.pool import PromptPool
from coact_verl.records import ResponseInfo
from coact_verl.step import (
    FeedbackHook,
    MetricsHook,
    PoolHook,
    StepBatch,
    after_step,
    load_states,
    rows_for_batch,
    save_states,
)
from coact_verl.step.pool_hook import WRITE_SAMPLING
from coact_verl.tasks import TASK_INSTRUCTIONS


class LabelLog:
    """The oracle's label log and budget as the service pages them; ``None`` pages: unreachable."""

    def __init__(self, records=(), reachable=True):
        self.records, self.reachable, self.calls = list(records), reachable, []

    def labels(self, since_id=0, limit=500):
        self.calls.append((since_id, limit))
        if not self.reachable:
            return None
        return {"labels": [r for r in self.records if r["id"] > since_id][:limit]}

    def budget(self):
        return {"total": 10, "spent": 3, "remaining": 7, "per_step": None} if self.reachable else None


def late_label(label_id, pid, step, answer, prompt="How many?"):
    label = {"answer": answer, "correct": [True], "source": "human"}
    return {"id": label_id, "prompt_id": pid, "prompt": prompt, "task": "gsm8k", "step": step, "label": label}


def oracle_info(pid, label, cluster, route_reason="budget"):
    return {"coact_prompt_id": pid, "coact_label_source": "oracle", "coact_label": label,
            "coact_label_cluster": cluster, "coact_route": "oracle", "coact_route_reason": route_reason}  # fmt: skip


def step_batch(step, infos, rows=None, uids=None):
    rows = rows or [{"question": f"question of {i.get('coact_prompt_id')}", "provenance": "dataset"} for i in infos]
    return StepBatch(step, infos, rows, uids or [f"u{i}" for i in range(len(infos))])


class Fixed:
    """A hook with fixed metrics and rows, to check the list semantics."""

    def __init__(self, metrics, rows, state_file=None):
        self.metrics, self.rows, self.state_file, self.state = metrics, list(rows), state_file, {"n": 1}

    def after_step(self, batch):
        return dict(self.metrics)

    def rows_for_batch(self, step, free):
        taken, self.rows = self.rows[:free], self.rows[free:]
        return taken

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


def test_hooks_run_as_a_list(tmp_path):
    first, second = Fixed({"a": 1.0}, [{"r": 1}, {"r": 2}], "first.json"), Fixed({"b": 2.0}, [{"r": 3}, {"r": 4}])
    assert after_step([first, second], step_batch(1, [])) == {"a": 1.0, "b": 2.0}
    with pytest.raises(KeyError, match="'a'"):
        after_step([first, Fixed({"a": 3.0}, [])], step_batch(1, []))
    # the first hook fills first, the next one what is left
    assert rows_for_batch([first, second], 1, 3) == [{"r": 1}, {"r": 2}, {"r": 3}]
    assert rows_for_batch([first, second], 2, 3) == [{"r": 4}]
    # only hooks with a state file are saved and restored
    first.state = {"n": 7}
    assert [p.rsplit("/", 1)[-1] for p in save_states([first, second], tmp_path)] == ["first.json"]
    fresh = Fixed({}, [], "first.json")
    assert len(load_states([fresh, Fixed({}, [])], tmp_path)) == 1 and fresh.state == {"n": 7}
    assert load_states([Fixed({}, [], "missing.json")], tmp_path) == []


@pytest.mark.parametrize(("rule", "seeds"), [("majority_correct", ["Q1"]), ("any_correct", ["Q1", "Q2"])])
def test_oracle_labels_become_seeds_by_rule(rule, seeds):
    hook = PoolHook(GenerationConfig(seed_rule=rule), "gsm8k")
    infos = [oracle_info("p1", "7", 0), oracle_info("p1", "7", 0), oracle_info("p2", "9", 1), {"coact_prompt_id": "p3"}]
    rows = [{"question": "Q1", "provenance": "dataset"}] * 2 + [{"question": "Q2", "provenance": "generated"}] * 2
    metrics = hook.after_step(step_batch(4, infos, rows))
    assert sorted(e.question for e in hook.pool.seeds()) == seeds
    assert [(e.label, e.label_step) for e in hook.pool if e.question == "Q1"] == [("7", 4)]
    assert metrics["coact/batch/provenance_dataset"] == 2.0 and metrics["coact/batch/provenance_generated"] == 2.0
    assert "coact/late_labels/late" not in metrics  # no oracle service: no label log to read


def test_late_labels_return_through_the_next_batch_and_survive_a_checkpoint(tmp_path):
    log = LabelLog([late_label(1, "in-step", 3, "4"), late_label(2, "late", 1, "18"), late_label(3, "blank", 1, None)])
    hook = PoolHook(GenerationConfig(), "gsm8k", log)
    metrics = hook.after_step(step_batch(3, [oracle_info("in-step", "4", 0)]))
    assert metrics["coact/late_labels/late"] == 1.0 and metrics["coact/late_labels/late_unusable"] == 1.0
    assert hook.pool.label_cursor == 3
    (row,) = [r for r in hook.rows_for_batch(4, 8) if r["extra_info"]["coact_label"] == "18"]
    assert row["extra_info"]["provenance"] == "oracle"
    assert [r["extra_info"]["coact_label"] for r in hook.rows_for_batch(4, 8)] == []  # served once
    # the state file is the pool's own format, the label cursor included
    save_states([hook], tmp_path)
    assert PromptPool.load(tmp_path / hook.state_file) == hook.pool
    restored = PoolHook(GenerationConfig(), "gsm8k", log)
    load_states([restored], tmp_path)
    restored.after_step(step_batch(5, []))
    assert restored.pool.label_cursor == 3 and log.calls[-1] == (3, 500)


def test_an_unreachable_label_log_is_counted():
    metrics = PoolHook(GenerationConfig(), "gsm8k", LabelLog(reachable=False)).after_step(step_batch(1, []))
    assert metrics["coact/late_labels/unreachable"] == 1.0


class ScriptedPolicy:
    """Writes one fixed question; answers it 6 times with 7 and twice with 8 (agreement 6/8)."""

    QUESTION = "Tom has 3 apples and buys 4 more. How many apples does Tom have now?"

    def __init__(self):
        self.calls = []

    async def complete(self, messages, params, max_tokens):
        self.calls.append((messages, dict(params), max_tokens))
        if dict(params) == WRITE_SAMPLING:
            return f"Question: {self.QUESTION}"
        answers = sum(1 for _, p, _ in self.calls if p != WRITE_SAMPLING)
        return "#### 8" if answers % 4 == 0 else "#### 7"

    def prompt_tokens(self, messages):
        return len(messages[0]["content"].split())


def test_a_due_generation_round_admits_an_almost_solved_question():
    config = GenerationConfig(every_k_steps=2, num_questions=1, seed_rule="any_correct")
    hook = PoolHook(config, "gsm8k")
    seeds = [oracle_info(f"s{i}", str(i), 0) for i in range(3)]
    hook.after_step(step_batch(1, seeds, [{"question": f"Ann has {i} pens. How many?"} for i in range(3)]))
    assert [hook.round_due(step) for step in (1, 2, 3, 4)] == [False, True, False, True]
    policy = ScriptedPolicy()
    with AnswerClusterer(ConsistencyConfig(task="gsm8k", use_math_verify=False)) as clusterer:
        metrics = asyncio.run(
            hook.generation_round(
                2, policy, clusterer, n=8, answer_params={"temperature": 1.0}, answer_tokens=32, max_prompt_tokens=100
            )
        )
    assert metrics["coact/gen/generated"] == 1.0 and metrics["coact/gen/admitted"] == 1.0
    (entry,) = [e for e in hook.pool if e.provenance == "generated"]
    assert entry.question == ScriptedPolicy.QUESTION and entry.label == "7"
    answer_calls = [c for c in policy.calls if c[1] != WRITE_SAMPLING]
    assert len(answer_calls) == 8 and all(c[2] == 32 for c in answer_calls)
    assert answer_calls[0][0][0]["content"].endswith(TASK_INSTRUCTIONS["gsm8k"])
    # the admitted question is trained on in the next batches
    assert [r["extra_info"]["provenance"] for r in hook.rows_for_batch(3, 4)] == ["generated"]


class PairService:
    def __init__(self, pairs, reachable=True):
        self.pairs, self.reachable = pairs, reachable

    def feedback_pairs(self, since_id=0, limit=500, min_eta=None):
        if not self.reachable:
            return None
        page = [p for p in self.pairs if p["id"] > since_id][:limit]
        return {"pairs": page, "next_since_id": page[-1]["id"] if page else since_id}


def pair(pair_id):
    return {"id": pair_id, "kind": "vote", "prompt_id": f"p{pair_id}", "prompt": f"Q{pair_id}?", "task": "gsm8k",
            "chosen": "#### 1", "rejected": "#### 2", "weight": 0.9}  # fmt: skip


def test_feedback_pairs_are_capped_per_step_across_chunks(tmp_path):
    hook = FeedbackHook(FeedbackConfig(pairs=True, max_pairs_per_step=3), PairService([pair(i) for i in range(1, 6)]))
    infos = [{"coact_route": "feedback"}, {"coact_route": "feedback"}, {"coact_route": "self"}]
    metrics = hook.after_step(step_batch(1, infos))
    assert metrics["coact/feedback/read"] == 5.0 and metrics["coact/feedback/batch_rows"] == 2.0
    # verl fetches step 2's prompts in two chunks: 2 + 1 pairs, then nothing more in step 2
    assert len(hook.rows_for_batch(2, 2)) == 2 and len(hook.rows_for_batch(2, 4)) == 1
    assert hook.rows_for_batch(2, 4) == []
    first_of_step_3 = hook.rows_for_batch(3, 4)
    assert len(first_of_step_3) == 2 and first_of_step_3[0]["extra_info"]["coact_feedback"]["chosen"] == "#### 1"
    save_states([hook], tmp_path)
    restored = FeedbackHook(FeedbackConfig(pairs=True), PairService([]))
    load_states([restored], tmp_path)
    assert restored.queue.cursor == 5 and restored.queue.served == 5
    assert (
        FeedbackHook(FeedbackConfig(pairs=True), PairService([], reachable=False)).after_step(step_batch(1, []))[
            "coact/feedback/unreachable"
        ]
        == 1.0
    )


def test_metrics_hook_counts_an_unreachable_budget():
    infos = [ResponseInfo(prompt_id="p", agreement=1.0, route="self", label_source="self").to_extra_info()] * 2
    metrics = MetricsHook(oracle=LabelLog()).after_step(step_batch(1, infos, uids=["u", "u"]))
    assert metrics["coact/oracle/budget_spent"] == 3.0 and "coact/oracle/unreachable" not in metrics
    assert metrics["coact/route/self_frac"] == 1.0
    assert (
        MetricsHook(oracle=LabelLog(reachable=False)).after_step(step_batch(1, []))["coact/oracle/unreachable"] == 1.0
    )
