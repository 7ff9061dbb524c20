"""Helpers for end-to-end runs of verl's ``main_ppo`` on the CPU backend."""

from __future__ import annotations

from pathlib import Path

from coact_verl.launch import TrainerRun, run_trainer

DENSE_REWARD = Path(__file__).with_name("dense_reward.py")


def base_overrides(assets: dict[str, Path], steps: int) -> list[str]:
    return [
        f"data.train_files={assets['train']}",
        f"data.val_files={assets['test']}",
        f"actor_rollout_ref.model.path={assets['model']}",
        f"trainer.total_training_steps={steps}",
    ]


def run_ok(config: str, overrides: list[str], log: Path, **kwargs) -> TrainerRun:
    """Run and assert a clean exit with step metrics, showing the log tail otherwise."""
    run = run_trainer(config, overrides, log, **kwargs)
    assert run.returncode == 0, f"main_ppo exited {run.returncode}\n{run.tail(80)}"
    assert run.steps, f"no step metrics in the log\n{run.tail(80)}"
    return run


def validation_rows_without_split(test_parquet: Path, out: Path, rows: int = 8) -> Path:
    """The first ``rows`` validation rows with no ``extra_info.split``: only verl's own validation flag marks them."""
    import pandas as pd

    frame = pd.read_parquet(test_parquet).head(rows)
    frame["extra_info"] = [{k: v for k, v in extra.items() if k != "split"} for extra in frame["extra_info"]]
    frame.to_parquet(out)
    return out
