"""Late oracle labels return to the prompt pool once, with their answer, and never for in-step labels."""

from __future__ import annotations

from coact_verl.pool import LateLabelTracker, PromptPool


def record(label_id: int, pid: str, step: int, answer: str | None, correct=(True, False), prompt: str = "Q?") -> dict:
    return {
        "id": label_id,
        "prompt_id": pid,
        "prompt": f"{prompt} ({pid})",
        "task": "gsm8k",
        "step": step,
        "label": {"answer": answer, "correct": list(correct), "source": "human"},
    }


def test_late_labels_are_queued_in_step_labels_are_not():
    pool, tracker = PromptPool(), LateLabelTracker()
    tracker.record_in_step("p-auto", 3)
    counts = tracker.apply(
        pool,
        [
            record(5, "p-auto", 3, "4"),  # answered within its step by an automatic backend
            record(6, "p-human", 2, "18", correct=(False, True)),  # a human answered after step 2
            record(9, "p-none", 2, None, correct=(False, False)),  # every candidate wrong, nothing typed
        ],
        step=3,
    )
    assert counts == {"late": 1, "late_unusable": 1}
    assert pool.label_cursor == 9
    (entry,) = list(pool)
    assert (entry.provenance, entry.label, entry.label_source, entry.label_step) == ("oracle", "18", "oracle", 3)
    assert entry.question == "Q? (p-human)" and entry.majority_correct is False and not entry.is_seed
    assert pool.metrics()["coact/pool/late_labels"] == 1.0
    (row,) = pool.take_for_training(4)
    assert row["extra_info"]["coact_label"] == "18" and row["extra_info"]["coact_label_source"] == "oracle"
    assert row["extra_info"]["provenance"] == "oracle"
    assert pool.take_for_training(4) == []  # served once


def test_cursor_survives_a_checkpoint(tmp_path):
    pool, tracker = PromptPool(), LateLabelTracker()
    tracker.apply(pool, [record(41, "p", 1, "7")], step=2)
    restored = PromptPool.load(pool.save(tmp_path / "pool.json"))
    assert restored.label_cursor == 41 and restored == pool


def test_in_step_memory_is_bounded():
    tracker = LateLabelTracker()
    for step in range(200):
        tracker.record_in_step(f"p{step}", step)
    assert len(tracker.in_step) <= 64 and tracker.was_in_step("p199", 199) and not tracker.was_in_step("p0", 0)
