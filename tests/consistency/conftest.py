"""Shared fixtures: the reference data folder and one math-verify clusterer for the whole session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency import AnswerClusterer

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def read_jsonl(relative: str) -> list[dict]:
    """Rows of a reference data file; skips the test when the shared data folder is absent."""
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"reference data not found: {path.resolve()} (expected the shared data folder next to the repo)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def reference_data():
    """``reference_data("gsm8k/test.jsonl")`` -> rows; the test is skipped when the data folder is absent."""
    return read_jsonl


@pytest.fixture(scope="session")
def clusterer():
    """math-task clusterer with two math-verify workers (started once per session)."""
    with AnswerClusterer(ConsistencyConfig(task="math", verify_workers=2, verify_timeout_s=10.0)) as c:
        c.warmup()
        yield c


@pytest.fixture
def fast_clusterer():
    """Canonical-only clusterer (no worker processes)."""
    with AnswerClusterer(ConsistencyConfig(task="math", use_math_verify=False)) as c:
        yield c
