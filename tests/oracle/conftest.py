"""Fixtures of the oracle tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from oracle_testlib import GOLD, Service


@pytest.fixture
def gold_file(tmp_path: Path) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps({"prompt_id": k, "answer": v}) + "\n" for k, v in GOLD.items()))
    return path


@pytest.fixture
def service_factory(tmp_path: Path, gold_file: Path) -> Iterator:
    """``make(*extra_args, backend="gold")`` starts a service with the gold file loaded.

    Answers are compared with ``coact_verl.consistency`` (the default) unless ``--equivalence`` is among the args.
    """
    started: list[Service] = []

    def make(*args: str, backend: str = "gold", gold: bool = True, name: str = "oracle") -> Service:
        extra = [*args] + (["--gold", str(gold_file)] if gold else [])
        svc = Service(db=tmp_path / f"{name}.sqlite", log=tmp_path / f"{name}.log", args=extra, backend=backend)
        started.append(svc)
        return svc.start()

    yield make
    for svc in started:
        svc.stop()
