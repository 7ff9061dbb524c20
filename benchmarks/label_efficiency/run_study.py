"""Label efficiency: accuracy against oracle labels used, for five labelling strategies, over seeds.

Every run goes through verl's own trainer on the CPU backend (``coact_grpo_cpu``) with the tiny model
warmed up on arithmetic word problems (the demo's assets) and the gold oracle:

* ``full_gold``: every group labelled by the oracle (supervised GRPO; the label budget of a fully labelled run);
* ``self_only``: majority vote only, no oracle (TTRL-like);
* ``random_20``: a random 20% of each step's groups go to the oracle, the rest self-labelled above τ_self;
* ``lowest_20``: the least-consistent 20% go to the oracle;
* ``coact_20``: CoAct's router at 20% (lowest agreement, then k-NN distance from verified prompts).

Accuracy is verl's validation accuracy (greedy, one sample) on the held-out arithmetic problems, measured
before training and every ``--test-freq`` steps; labels used is the oracle's cumulative charge. Writes
``label_efficiency.json`` (the schema of :mod:`coact_verl.report.study`), ``study.md`` and, through
``coact-verl report``, the plots::

    python benchmarks/label_efficiency/run_study.py --out study_out            # 5 arms x 3 seeds
    python benchmarks/label_efficiency/run_study.py --out smoke --seeds 1 --steps 2 --arms self_only coact_20
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from coact_verl.demo import prepare_demo_assets
from coact_verl.launch import run_trainer
from coact_verl.report.build import build_report
from coact_verl.report.study import STUDY_FILE

ARMS: dict[str, list[str]] = {
    "full_gold": ["coact.router.policy=gold_all", "coact.router.oracle_share_per_step=1.0"],
    "self_only": ["coact.router.policy=self_only"],
    "random_20": ["coact.router.policy=random", "coact.router.oracle_share_per_step=0.2"],
    "lowest_20": ["coact.router.policy=lowest_agreement", "coact.router.oracle_share_per_step=0.2"],
    "coact_20": ["coact.router.policy=coact", "coact.router.oracle_share_per_step=0.2"],
}
ACCURACY = re.compile(r"^val-core/.+/acc/mean@\d+$")


def run_arm(arm: str, seed: int, args: argparse.Namespace, model: Path, data: dict[str, Path]) -> dict:
    """One training run; returns ``{"arm", "seed", "points": [{"step", "labels_used", "accuracy"}]}``."""
    folder = args.out / "runs" / f"{arm}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("oracle.sqlite*"):
        stale.unlink()
    overrides = [
        f"data.train_files={data['train']}",
        f"data.val_files={data['test']}",
        f"actor_rollout_ref.model.path={model}",
        f"trainer.total_training_steps={args.steps}",
        f"trainer.test_freq={args.test_freq}",
        "trainer.val_before_train=True",
        "trainer.logger=[console,file]",
        f"data.seed={seed}",
        f"coact.router.seed={seed}",
        f"coact.oracle.gold_path={data['train_gold']}",
        f"coact.oracle.db_path={folder / 'oracle.sqlite'}",
        *ARMS[arm],
    ]
    env = {"VERL_FILE_LOGGER_PATH": str(folder / "metrics.jsonl")}
    run = run_trainer("coact_grpo_cpu", overrides, folder / "train.log", extra_env=env, timeout_s=args.timeout_s)
    if run.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed ({run.returncode}); log: {run.log_path}\n{run.tail(30)}")
    points, spent = [], 0.0
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step, metrics = int(record["step"]), record["data"]
        spent = float(metrics.get("coact/oracle/budget_spent", spent))
        accuracy = [float(v) for k, v in metrics.items() if ACCURACY.match(k)]
        if accuracy:  # validation before training is logged at step 0, before any label is spent
            points.append({"step": step, "labels_used": spent if step > 0 else 0.0, "accuracy": accuracy[0]})
    if not points:
        raise RuntimeError(f"{arm} seed {seed}: no validation accuracy in {folder / 'metrics.jsonl'}")
    return {"arm": arm, "seed": seed, "points": points}


def summary(runs: list[dict]) -> list[str]:
    """Markdown table: final accuracy (mean ± std over seeds), its change from step 0, labels used."""
    lines = [
        "| arm | seeds | accuracy at step 0 | final accuracy | change | labels used |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        first = [r["points"][0]["accuracy"] for r in mine]
        last = [r["points"][-1]["accuracy"] for r in mine]
        labels = [r["points"][-1]["labels_used"] for r in mine]
        change = [b - a for a, b in zip(first, last, strict=True)]
        lines.append(
            f"| {arm} | {len(mine)} | {_pm(first)} | {_pm(last)} | {_pm(change, signed=True)} | {_pm(labels, 1)} |"
        )
    return lines


def _pm(values: list[float], digits: int = 3, signed: bool = False) -> str:
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.{digits}f} ± {spread:.{digits}f}" if signed else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("label_efficiency_out"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--test-freq", type=int, default=4)
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    model, data = prepare_demo_assets(args.out / "assets")
    runs = []
    study_path = args.out / STUDY_FILE
    metric = "validation accuracy (greedy, 1 sample) on held-out arithmetic problems"
    for seed in range(args.seeds):
        for arm in args.arms:
            runs.append(run_arm(arm, seed, args, model, data))
            study_path.write_text(json.dumps({"metric": metric, "runs": runs}, indent=1))  # kept after each run
            last = runs[-1]["points"][-1]
            print(
                f"{arm} seed {seed}: accuracy {last['accuracy']:.3f} with {last['labels_used']:.0f} labels", flush=True
            )
    table = summary(runs)
    (args.out / "study.md").write_text("\n".join(["# Label efficiency", "", f"Accuracy: {metric}.", "", *table, ""]))
    print("\n".join(table), flush=True)
    report = build_report(args.out)
    print(f"plots and report: {report.markdown.parent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
