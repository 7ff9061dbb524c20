"""The prompt pool: provenance, labels, seeds, the training queue, metrics and an exact, atomic checkpoint."""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path

import pytest

import coact_verl.state_file as state_file_module
from coact_verl.config import GenerationConfig
from coact_verl.pool import GENERATED_SOURCE, TASK_INSTRUCTIONS, PoolEntry, PromptPool
from coact_verl.tasks import prompt_id

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def gsm8k_questions(limit: int) -> list[str]:
    path = DATA / "gsm8k" / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"reference data not found: {path} (expected the shared data folder next to the repo)")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in itertools.islice(handle, limit)]


def dataset_pool(count: int = 60, **kwargs) -> tuple[PromptPool, list[str]]:
    questions = gsm8k_questions(count)
    pool = PromptPool(**kwargs)
    for q in questions:
        assert pool.add(q, "gsm8k", data_source="openai/gsm8k")
    return pool, [prompt_id("openai/gsm8k", q) for q in questions]


def busy_pool() -> PromptPool:
    """A pool that has been through every kind of change."""
    pool, ids = dataset_pool(80, seed=7)
    for i, pid in enumerate(ids[:30]):
        pool.add_oracle_label(pid, str(i), step=1, majority_correct=i % 5 != 0, late=i % 4 == 0)
    extra = gsm8k_questions(120)[80:]
    for i, q in enumerate(extra[:20]):
        pool.add(q, "gsm8k", "generated", label=str(100 + i), step=2)
    pool.add(extra[0].upper(), "gsm8k", "generated", label="1", step=2)  # exact duplicate
    pool.add(extra[1].replace("a", "e", 1), "gsm8k", "generated", label="1", step=2)  # near duplicate
    pool.add_oracle_label("unseen-id", "9", step=3, question=extra[30], task="gsm8k", late=True)
    pool.take_for_training(5)
    pool.mark_served(ids[40:45])
    for _ in range(4):
        pool.sample_seeds(3)
    return pool


def test_add_rejects_duplicates_with_a_counted_reason():
    pool, ids = dataset_pool(10)
    q = pool.get(ids[0]).question
    assert not pool.add(q, "gsm8k", data_source="openai/gsm8k")  # same id
    assert not pool.add("\n" + "  ".join(q.lower().split()) + "  ", "gsm8k", "generated", label="1")  # reworded spaces
    assert not pool.add(q.replace("48", "50"), "gsm8k", "generated", label="1")  # near copy
    assert pool.rejected == {"exact": 2, "near": 1}
    assert len(pool) == 10
    metrics = pool.metrics()
    assert metrics["coact/pool/duplicates_rejected"] == 3.0
    assert metrics["coact/pool/duplicates_exact"] == 2.0 and metrics["coact/pool/duplicates_near"] == 1.0


def test_add_validates_its_arguments():
    pool = PromptPool()
    with pytest.raises(ValueError, match="task"):
        pool.add("What is 2 + 2?", "chess")
    with pytest.raises(ValueError, match="provenance"):
        pool.add("What is 2 + 2?", "gsm8k", "web")
    with pytest.raises(ValueError, match="needs a label"):
        pool.add("What is 2 + 2?", "gsm8k", "generated")
    with pytest.raises(ValueError, match="label_source"):
        pool.add("What is 2 + 2?", "gsm8k", "generated", label="4", label_source="crowd")


def test_oracle_labels_promote_dataset_prompts_and_make_seeds():
    pool, ids = dataset_pool(10)
    assert pool.counts() == {"dataset": 10, "oracle": 0, "generated": 0}
    assert pool.sample_seeds(3) == []
    entry = pool.add_oracle_label(ids[2], "72", step=4, majority_correct=True)
    assert (entry.provenance, entry.label, entry.label_source, entry.label_step) == ("oracle", "72", "oracle", 4)
    pool.add_oracle_label(ids[3], "5", step=4, majority_correct=False)  # the policy's majority was wrong: no seed
    pool.add_oracle_label(ids[4], "6", step=4)  # unknown agreement: still a seed
    assert pool.counts() == {"dataset": 7, "oracle": 3, "generated": 0}
    assert [e.prompt_id for e in pool.seeds()] == [ids[2], ids[4]]
    drawn = pool.sample_seeds(5)
    assert sorted(e.prompt_id for e in drawn) == sorted([ids[2], ids[4]])
    assert pool.queued == 0  # labels that arrived in time are not trained again
    with pytest.raises(KeyError):
        pool.add_oracle_label("nope", "1", step=4)


def test_late_labels_are_queued_and_unknown_prompts_added():
    pool, ids = dataset_pool(10)
    pool.add_oracle_label(ids[1], "3", step=5, late=True)
    pool.add_oracle_label(ids[1], "3", step=6, late=True)  # queued once
    question = "A farmer has 17 cows and buys 8 more. How many cows does the farmer have now?"
    new = pool.add_oracle_label("x", "25", step=6, question=question, task="gsm8k", late=True)
    assert new.provenance == "oracle" and new.prompt_id == prompt_id("coact/oracle", question)
    same = pool.add_oracle_label("y", "26", step=7, question=question.upper(), task="gsm8k")  # same text, new id
    assert same is new and new.label == "26"
    assert pool.queued == 2 and pool.metrics()["coact/pool/late_labels"] == 3.0
    rows = pool.take_for_training(10)
    assert [r["extra_info"]["prompt_id"] for r in rows] == [ids[1], new.prompt_id]
    assert pool.take_for_training(10) == []


def test_take_for_training_is_fifo_once_each_with_verl_rows():
    pool, _ = dataset_pool(5)
    questions = [
        "Ava has 12 pencils and gives 5 away. How many pencils does she keep?",
        "A bus carries 40 people and 13 get off. How many remain on the bus?",
        "Find the area of a square with side 9 cm.",
    ]
    for step, q in enumerate(questions):
        assert pool.add(q, "gsm8k", "generated", label=str(step), step=step)
    assert pool.queued == 3
    first = pool.take_for_training(2)
    assert [r["extra_info"]["question"] for r in first] == questions[:2]
    row = first[0]
    assert row["data_source"] == GENERATED_SOURCE
    assert row["prompt"] == [{"role": "user", "content": f"{questions[0]} {TASK_INSTRUCTIONS['gsm8k']}"}]
    assert row["ability"] == "math"
    assert row["reward_model"]["ground_truth"] == ""
    extra = row["extra_info"]
    assert extra["prompt_id"] == prompt_id(GENERATED_SOURCE, questions[0])
    assert (extra["task"], extra["provenance"], extra["coact_label"], extra["coact_label_source"]) == (
        "gsm8k",
        "generated",
        "0",
        "self",
    )
    assert extra["index"] == 5
    assert [r["extra_info"]["question"] for r in pool.take_for_training(5)] == questions[2:]
    assert pool.take_for_training(5) == []
    assert [pool.get(r["extra_info"]["prompt_id"]).times_served for r in first] == [1, 1]
    assert pool.metrics()["coact/pool/served"] == 3.0
    with pytest.raises(ValueError):
        pool.take_for_training(-1)


def test_sample_seeds_uses_the_given_rng_or_the_pools_own():
    pool, ids = dataset_pool(20, seed=3)
    for pid in ids[:10]:
        pool.add_oracle_label(pid, "1", step=0, majority_correct=True)
    mine = [e.prompt_id for e in pool.sample_seeds(3, random.Random(11))]
    assert mine == [e.prompt_id for e in pool.sample_seeds(3, random.Random(11))]
    twin, _ = dataset_pool(20, seed=3)
    for pid in ids[:10]:
        twin.add_oracle_label(pid, "1", step=0, majority_correct=True)
    assert [e.prompt_id for e in pool.sample_seeds(3)] == [e.prompt_id for e in twin.sample_seeds(3)]
    assert len({e.prompt_id for e in pool.sample_seeds(10)}) == 10


def test_metrics_and_counts():
    pool = busy_pool()
    metrics = pool.metrics()
    counts = pool.counts()
    assert metrics["coact/pool/size"] == len(pool) == sum(counts.values())
    for provenance, count in counts.items():
        assert metrics[f"coact/pool/size_{provenance}"] == count
    assert counts == {"dataset": 50, "oracle": 31, "generated": 20}
    assert metrics["coact/pool/seeds"] == 31 - 6  # every fifth labelled prompt had a wrong majority
    assert metrics["coact/pool/queued"] == pool.queued == 8 + 1 + 20 - 5
    assert metrics["coact/pool/duplicates_rejected"] == 2.0
    assert metrics["coact/pool/served"] == 10.0


def test_state_round_trip_is_exact_and_rng_continues():
    pool = busy_pool()
    state = pool.state_dict()
    restored = PromptPool()
    restored.load_state_dict(json.loads(json.dumps(state)))  # plain JSON
    assert restored == pool
    assert list(restored) == list(pool)  # every entry, in order
    assert restored.state_dict() == state
    assert restored.metrics() == pool.metrics()
    for _ in range(5):
        assert restored.sample_seeds(3) == pool.sample_seeds(3)
    assert restored.take_for_training(4) == pool.take_for_training(4)
    probe = pool.get(next(iter(e.prompt_id for e in pool if e.provenance == "dataset"))).question.replace("a", "o", 1)
    assert restored.add(probe, "gsm8k", "generated", label="1") == pool.add(probe, "gsm8k", "generated", label="1")
    assert restored == pool


def test_save_and_load_file(tmp_path):
    pool = busy_pool()
    path = pool.save(tmp_path / "ckpt" / "pool.json")
    loaded = PromptPool.load(path)
    assert loaded == pool and list(loaded) == list(pool)
    assert os.listdir(path.parent) == ["pool.json"]
    assert [loaded.sample_seeds(2) for _ in range(3)] == [pool.sample_seeds(2) for _ in range(3)]


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    pool = busy_pool()
    path = pool.save(tmp_path / "pool.json")
    before = path.read_bytes()
    snapshot = PromptPool.load(path)
    pool.add("A shop sells 30 pies a day for 6 days. How many pies does it sell?", "gsm8k", "generated", label="180")
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of the data, then fails like a full disk."""

        def __init__(self, *args, **kwargs):
            self.handle = real_fdopen(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_file_module.os, "fdopen", HalfWriter)
    with pytest.raises(OSError, match="No space"):
        pool.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert PromptPool.load(path) == snapshot != pool
    assert os.listdir(tmp_path) == ["pool.json"]  # no temporary file left behind

    def no_rename(src, dst):
        raise OSError("interrupted")

    monkeypatch.setattr(state_file_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="interrupted"):
        pool.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["pool.json"]


def test_load_rejects_foreign_or_corrupt_state():
    pool = busy_pool()
    state = pool.state_dict()
    with pytest.raises(ValueError, match="prompt-pool"):
        PromptPool().load_state_dict({**state, "version": 99})
    doubled = {**state, "entries": state["entries"] + state["entries"][:1]}
    with pytest.raises(ValueError, match="twice"):
        PromptPool().load_state_dict(doubled)
    with pytest.raises(ValueError, match="queues"):
        PromptPool().load_state_dict({**state, "queue": ["missing"]})


def test_entry_dict_round_trip_and_from_config():
    entry = PoolEntry("abc", "What is 1 + 1?", "gsm8k", "generated", GENERATED_SOURCE, label="2", label_source="self")
    assert PoolEntry.from_dict(entry.to_dict()) == entry
    assert not entry.is_seed
    pool = PromptPool.from_config(GenerationConfig(seed=5, near_duplicate_threshold=0.9))
    assert (pool.seed, pool.near_threshold) == (5, 0.9)
