"""A constructed testbed where labels matter: problem kinds with self-consistent errors, a small warmed-up
model, and verl parquet, for the label-efficiency study and the demo.

Like AlpacaFarm's simulated annotators, it is a controlled stand-in, not a benchmark: the errors are planted
(a wrong rule on a slice of the warm-up data) so that majority voting entrenches them and an oracle fixes
them, and its two knobs (:class:`TestbedConfig`: share of trap problems, warm-up error rate) set how much.

Typical use::

    from coact_verl.testbed import TestbedConfig, prepare_testbed, testbed_overrides
    assets = prepare_testbed(Path("work/assets"), TestbedConfig(trap_share=0.3))
    run_trainer("coact_grpo_cpu", testbed_overrides(assets, Path("work/run"), steps=16), "work/run/train.log")
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from coact_verl.testbed.data import write_testbed_data
from coact_verl.testbed.model import WARMUP_FILE, build_testbed_model
from coact_verl.testbed.tasks import (
    DATA_SOURCE_PREFIX,
    KIND_NAMES,
    TRAP_KINDS,
    TestbedConfig,
    TestbedProblem,
    kind_weights,
    sample_problems,
    warmup_problems,
)

#: verl's greedy validation accuracy of one kind: ``val-core/testbed/<kind>/acc/mean@1``.
KIND_ACCURACY = re.compile(r"^val-core/" + re.escape(DATA_SOURCE_PREFIX) + r"(?P<kind>\w+)/acc/mean@\d+$")


def prepare_testbed(
    workdir: Path, cfg: TestbedConfig | None = None, *, warmup_steps: int = 500, train_count: int = 2048,
    test_count: int = 240,
) -> dict[str, Path]:  # fmt: skip
    """Model + data under ``workdir``; reused when built before with the same knobs.

    Returns ``{"model", "train", "train_gold", "test", "test_gold"}`` paths.
    """
    cfg = cfg or TestbedConfig()
    model_dir = Path(workdir) / "model"
    record = model_dir / WARMUP_FILE
    fresh = not record.is_file() or json.loads(record.read_text()).get("testbed") != asdict(cfg)
    if fresh or json.loads(record.read_text()).get("warmup_steps") != warmup_steps:
        build_testbed_model(model_dir, cfg, warmup_steps=warmup_steps)
    data = write_testbed_data(Path(workdir) / "data", cfg, train_count=train_count, test_count=test_count)
    return {"model": model_dir, **data}


def testbed_overrides(
    assets: Mapping[str, Path], run_dir: Path, steps: int, *, batch_size: int = 32, samples: int = 8
) -> list[str]:
    """verl/CoAct overrides of ``coact_grpo_cpu`` for a testbed run writing into ``run_dir``.

    ``batch_size`` prompts per step, ``samples`` responses per prompt; the gold oracle service keeps its
    SQLite file in ``run_dir``; validation is greedy (one sample per problem).
    """
    micro = batch_size * samples
    return [
        f"data.train_files={assets['train']}",
        f"data.val_files={assets['test']}",
        f"actor_rollout_ref.model.path={assets['model']}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        f"coact.oracle.gold_path={assets['train_gold']}",
        f"coact.oracle.db_path={run_dir / 'oracle.sqlite'}",
        f"data.train_batch_size={batch_size}",
        "data.max_prompt_length=96",
        "data.max_response_length=24",
        f"actor_rollout_ref.rollout.n={samples}",
        # one on-policy update per step; a step moves the small model far enough to flip a trap kind in ~20 steps
        "actor_rollout_ref.actor.optim.lr=5e-4",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
    ]


def validation_accuracy(
    metrics: Mapping[str, float], counts: Mapping[str, int]
) -> tuple[float, dict[str, float]] | None:
    """``(overall, {kind: accuracy})`` from one logged step's metrics, or ``None`` when it has no validation.

    ``counts`` maps ``testbed/<kind>`` to its number of validation problems (the overall accuracy's weights).
    """
    per_kind = {m.group("kind"): float(v) for k, v in metrics.items() if (m := KIND_ACCURACY.match(k))}
    if not per_kind:
        return None
    weights = {kind: counts.get(DATA_SOURCE_PREFIX + kind, 0) for kind in per_kind}
    total = sum(weights.values())
    overall = (
        sum(per_kind[k] * weights[k] for k in per_kind) / total if total else sum(per_kind.values()) / len(per_kind)
    )
    return overall, per_kind


__all__ = [
    "DATA_SOURCE_PREFIX",
    "KIND_ACCURACY",
    "KIND_NAMES",
    "TRAP_KINDS",
    "TestbedConfig",
    "TestbedProblem",
    "build_testbed_model",
    "kind_weights",
    "prepare_testbed",
    "sample_problems",
    "testbed_overrides",
    "validation_accuracy",
    "warmup_problems",
    "write_testbed_data",
]
