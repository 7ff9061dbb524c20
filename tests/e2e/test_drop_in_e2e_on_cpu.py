"""The drop-in ``coact`` reward manager in a stock verl GRPO config (verl's V1 trainer and stock agent loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import base_overrides, run_ok, validation_rows_without_split

pytestmark = pytest.mark.e2e
CONFIGS = Path(__file__).with_name("configs")


def test_validation_rows_without_a_split_are_scored_alone(tiny_assets, tmp_path):
    """verl's stock agent loop drops its validation flag before scoring; the reward manager still scores each
    validation row alone, at once (a row that waited for n siblings would time out and carry no ``acc``)."""
    overrides = base_overrides(tiny_assets, 1) + [
        f"data.val_files={validation_rows_without_split(tiny_assets['test'], tmp_path / 'val.parquet')}",
        "reward.reward_manager.name=coact",
        "+coact.router.policy=self_only",
        "+coact.group.reward_timeout_s=60",
        "trainer.val_before_train=True",
    ]
    run = run_ok("stock_grpo_cpu", overrides, tmp_path / "dropin_val.log", config_path=CONFIGS)
    log = run.log_path.read_text()
    assert "val-core/coact/arithmetic/acc/mean@1" in log, log[-3000:]
    assert [s for s in sorted(run.steps) if s > 0] == [1]
