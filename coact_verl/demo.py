"""The CPU demo: a few CoAct GRPO steps through verl's own entrypoint on embedded defaults.

It builds a tiny model and tokenizer (briefly warmed up on GSM8K-format arithmetic so that its answers
agree some of the time), writes GSM8K-style prompts as unlabelled verl parquet with the gold answers
set aside for the gold oracle, and runs ``python -m verl.trainer.main_ppo --config-name coact_grpo_cpu``.
"""

from __future__ import annotations

from pathlib import Path

from coact_verl.data.prepare import prepare
from coact_verl.data.tiny import build_tiny_model
from coact_verl.launch import TrainerRun, run_trainer

DEMO_METRICS = (
    "training/global_step",
    "critic/score/mean",
    "actor/grad_norm",
    "coact/agreement/mean",
    "coact/route/self_frac",
    "coact/route/oracle_frac",
    "coact/route/drop_frac",
    "coact/oracle/budget_spent",
    "coact/self_label/precision",
    "timing_s/step",
)


def prepare_demo_assets(workdir: Path, warmup_steps: int = 300) -> tuple[Path, dict[str, Path]]:
    """Tiny model + arithmetic data under ``workdir`` (reused when already there)."""
    model_dir = workdir / "tiny_model"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, warmup_steps=warmup_steps)
    data = prepare("arithmetic", None, workdir / "data")
    return model_dir, data


def demo_overrides(model_dir: Path, data: dict[str, Path], workdir: Path, steps: int) -> list[str]:
    return [
        f"data.train_files={data['train']}",
        f"data.val_files={data['test']}",
        f"actor_rollout_ref.model.path={model_dir}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"coact.oracle.gold_path={data['train_gold']}",
        f"coact.oracle.db_path={workdir / 'oracle.sqlite'}",
    ]


def run_demo(workdir: str | Path = "demo_run", steps: int = 3, extra_overrides: list[str] | None = None) -> TrainerRun:
    """Run the demo and print each step's key metrics; returns the run (``returncode`` 0 on success)."""
    workdir = Path(workdir).resolve()
    model_dir, data = prepare_demo_assets(workdir)
    for stale in workdir.glob("oracle.sqlite*"):  # each demo run starts with a fresh label budget
        stale.unlink()
    overrides = demo_overrides(model_dir, data, workdir, steps) + list(extra_overrides or [])
    print(f"coact-verl demo: {steps} CoAct GRPO steps on CPU; log: {workdir / 'train.log'}", flush=True)
    run = run_trainer("coact_grpo_cpu", overrides, workdir / "train.log", echo=False, timeout_s=900)
    for step, metrics in sorted(run.steps.items()):
        shown = "  ".join(f"{k.split('/', 1)[-1]}={metrics[k]:.4g}" for k in DEMO_METRICS if k in metrics)
        print(f"step {step}: {shown}", flush=True)
    if run.returncode != 0:
        print(run.tail(40), flush=True)
        print(f"demo failed with exit code {run.returncode}; full log: {run.log_path}", flush=True)
    return run
