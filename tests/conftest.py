"""Shared fixtures: real data from ../shared/data, a tiny local model, and prepared verl parquet."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A warmed-up tiny model and the arithmetic dataset, built once per test session."""
    from coact_verl.demo import prepare_demo_assets

    workdir = tmp_path_factory.mktemp("tiny_assets")
    model_dir, data = prepare_demo_assets(workdir)
    return {"model": model_dir, **data}
