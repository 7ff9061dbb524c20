"""Label efficiency on the testbed: validation accuracy against oracle labels used, six arms, over seeds.

Every run trains through verl's own trainer on the CPU backend (``coact_grpo_cpu``) on the constructed
testbed of :mod:`coact_verl.testbed` (a small model warmed up on five kinds of word problems, two of which
it learned with a wrong rule: it is confidently wrong on them), with the gold oracle:

* ``full_gold``: every group labelled by the oracle (supervised GRPO; the label cost of full labelling);
* ``self_only``: majority vote only, no oracle (TTRL-like);
* ``random_20``: a random 20% of the groups go to the oracle, the rest self-labelled above τ_self;
* ``lowest_20``: the least-consistent 20% go to the oracle;
* ``coact_20``: CoAct's router at 20% (lowest agreement, then k-NN distance from oracle-verified prompts);
* ``adaptive_20``: the budget split across lowest agreement, k-NN and spot checks by each branch's measured yield.

Accuracy is verl's validation accuracy (greedy, one sample) on held-out problems of every kind
(``val-core/testbed/<kind>/acc/mean@1``), measured before training and every ``--test-freq`` steps; the overall
accuracy weights the kinds by their number of validation problems. Labels used is the oracle's cumulative
charge. Writes ``label_efficiency.json`` (the schema of :mod:`coact_verl.report.study`, with ``per_kind``
accuracies and wall times added), ``study.md`` and, through the report, the plots. A run already in the JSON
file is not repeated (rerun the command to resume an interrupted study)::

    python benchmarks/label_efficiency/run_study.py --out study_out                 # 6 arms x 3 seeds
    python benchmarks/label_efficiency/run_study.py --out smoke --seeds 1 --steps 4 --arms self_only coact_20
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from coact_verl.launch import run_trainer
from coact_verl.report.build import build_report
from coact_verl.report.study import STUDY_FILE
from coact_verl.testbed import (
    DATA_SOURCE_PREFIX,
    TRAP_KINDS,
    TestbedConfig,
    prepare_testbed,
    testbed_overrides,
    validation_accuracy,
)

ARMS: dict[str, list[str]] = {
    "full_gold": ["coact.router.policy=gold_all", "coact.router.oracle_share_per_step=1.0"],
    "self_only": ["coact.router.policy=self_only"],
    "random_20": ["coact.router.policy=random", "coact.router.oracle_share_per_step=0.2"],
    "lowest_20": ["coact.router.policy=lowest_agreement", "coact.router.oracle_share_per_step=0.2"],
    "coact_20": ["coact.router.policy=coact", "coact.router.oracle_share_per_step=0.2"],
    "adaptive_20": ["coact.router.policy=adaptive", "coact.router.oracle_share_per_step=0.2"],
}
METRIC = "validation accuracy (greedy, 1 sample) on held-out testbed problems of every kind"


@contextmanager
def _exclusive(lock_path: Path | None):
    """Hold an exclusive ``flock`` on ``lock_path`` (no-op for ``None``): one training run at a time on a host."""
    if lock_path is None:
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_arm(arm: str, seed: int, args: argparse.Namespace, assets: dict[str, Path], counts: dict[str, int]) -> dict:
    """One training run: ``{"arm", "seed", "wall_s", "points": [{"step", "labels_used", "accuracy", "per_kind"}]}``."""
    folder = args.out / "runs" / f"{arm}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("oracle.sqlite*"), folder / "metrics.jsonl"]:
        stale.unlink(missing_ok=True)
    overrides = [
        *testbed_overrides(assets, folder, args.steps, batch_size=args.batch_size, samples=args.samples),
        f"trainer.test_freq={args.test_freq}",
        "trainer.val_before_train=True",
        "trainer.logger=[console,file]",
        f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}" if args.rollout_seed else None,
        f"coact.router.seed={seed}",
        *ARMS[arm],
    ]
    overrides = [o for o in overrides if o is not None]
    env = {"VERL_FILE_LOGGER_PATH": str(folder / "metrics.jsonl")}
    with _exclusive(args.lock):
        run = run_trainer("coact_grpo_cpu", overrides, folder / "train.log", extra_env=env, timeout_s=args.timeout_s)
    if run.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed ({run.returncode}); log: {run.log_path}\n{run.tail(30)}")
    points, spent = [], 0.0
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step, metrics = int(record["step"]), record["data"]
        spent = float(metrics.get("coact/oracle/budget_spent", spent))
        accuracy = validation_accuracy(metrics, counts)
        if accuracy is not None:  # validation before training is logged at step 0, before any label is spent
            overall, per_kind = accuracy
            labels = spent if step > 0 else 0.0
            points.append({"step": step, "labels_used": labels, "accuracy": overall, "per_kind": per_kind})
    if not points:
        raise RuntimeError(f"{arm} seed {seed}: no validation accuracy in {folder / 'metrics.jsonl'}")
    return {"arm": arm, "seed": seed, "wall_s": round(run.wall_s, 1), "points": points}


def _pm(values: list[float], digits: int = 3, signed: bool = False) -> str:
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.{digits}f} ± {spread:.{digits}f}" if signed else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def summary(runs: list[dict], kinds: list[str]) -> list[str]:
    """Markdown: final accuracy per arm (mean ± std over seeds), change from step 0, labels used, per kind."""
    lines = [
        "| arm | seeds | accuracy at step 0 | final accuracy | change | labels used |",
        "|---|---|---|---|---|---|",
    ]
    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ARMS}
    for arm, mine in by_arm.items():
        if not mine:
            continue
        first = [r["points"][0]["accuracy"] for r in mine]
        last = [r["points"][-1]["accuracy"] for r in mine]
        labels = [r["points"][-1]["labels_used"] for r in mine]
        change = [b - a for a, b in zip(first, last, strict=True)]
        lines.append(
            f"| {arm} | {len(mine)} | {_pm(first)} | {_pm(last)} | {_pm(change, signed=True)} | {_pm(labels, 1)} |"
        )
    header = " | ".join(f"{k}{' (trap)' if k in TRAP_KINDS else ''}" for k in kinds)
    lines += ["", f"| arm | {header} |", "|---|" + "---|" * len(kinds)]
    for arm, mine in by_arm.items():
        if mine:
            cells = [_pm([r["points"][-1]["per_kind"][k] for r in mine], 2) for k in kinds]
            lines.append(f"| {arm} (final) | {' | '.join(cells)} |")
    start = [r for r in runs if r["points"]]
    if start:
        cells = [_pm([r["points"][0]["per_kind"][k] for r in start], 2) for k in kinds]
        lines.append(f"| all arms (step 0) | {' | '.join(cells)} |")
    return lines


def verdict(runs: list[dict]) -> list[str]:
    """The two targets: gold above self-only by more than 2 std, a 20% router recovering >= 80% of the gap."""
    final = {arm: [r["points"][-1]["accuracy"] for r in runs if r["arm"] == arm] for arm in ARMS}
    if not (final["full_gold"] and final["self_only"]):
        return ["Targets not evaluated: full_gold and self_only are both needed."]
    gold, self_ = statistics.fmean(final["full_gold"]), statistics.fmean(final["self_only"])
    spread = max(statistics.pstdev(final[a]) if len(final[a]) > 1 else 0.0 for a in ("full_gold", "self_only"))
    gap = gold - self_
    lines = [
        f"- full_gold − self_only = {gap:+.3f}; larger std of the two = {spread:.3f}; "
        f"gap > 2 std: **{'yes' if gap > 2 * spread else 'no'}**."
    ]
    for arm in ("random_20", "lowest_20", "coact_20", "adaptive_20"):
        if final[arm] and gap > 0:
            share = (statistics.fmean(final[arm]) - self_) / gap
            mark = f" (target ≥ 80%: **{'met' if share >= 0.8 else 'not met'}**)" if arm != "random_20" else ""
            lines.append(f"- {arm} recovers {100 * share:.0f}% of full_gold's gain over self_only{mark}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("label_efficiency_out"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--test-freq", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="responses per prompt (agreement is over them)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--trap-share", type=float, default=TestbedConfig.trap_share)
    parser.add_argument("--warmup-error-rate", type=float, default=TestbedConfig.warmup_error_rate)
    parser.add_argument("--warmup-steps", type=int, default=500, help="supervised warm-up steps of the testbed model")
    parser.add_argument("--rollout-seed", action="store_true", help="also seed verl's rollout sampling per seed")
    parser.add_argument("--lock", type=Path, default=None, help="flock this file while each run trains")
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    started = time.monotonic()
    testbed = TestbedConfig(trap_share=args.trap_share, warmup_error_rate=args.warmup_error_rate)
    assets = prepare_testbed(args.out / "assets", testbed, warmup_steps=args.warmup_steps)
    test = pd.read_parquet(assets["test"])
    counts = test["data_source"].value_counts().to_dict()
    kinds = [k.removeprefix("testbed/") for k in sorted(counts)]
    study_path = args.out / STUDY_FILE
    previous = json.loads(study_path.read_text()) if study_path.is_file() else {}
    runs = [r for r in previous.get("runs", []) if r["arm"] in args.arms and r["seed"] < args.seeds]
    done = {(r["arm"], r["seed"]) for r in runs}

    def save() -> None:
        study = {"metric": METRIC, "testbed": vars(testbed) | {"steps": args.steps, "batch_size": args.batch_size,
                 "samples": args.samples}, "runs": runs}  # fmt: skip
        study_path.write_text(json.dumps(study, indent=1))

    for seed in range(args.seeds):
        for arm in args.arms:
            if (arm, seed) in done:
                continue
            runs.append(run_arm(arm, seed, args, assets, counts))
            save()  # kept after each run: an interrupted study resumes from here
            last = runs[-1]["points"][-1]
            print(
                f"{arm} seed {seed}: accuracy {last['accuracy']:.3f} with {last['labels_used']:.0f} labels "
                f"({runs[-1]['wall_s']:.0f} s)",
                flush=True,
            )
    save()
    wall = sum(r.get("wall_s", 0.0) for r in runs)
    table = summary(runs, kinds)
    per_kind = ", ".join(f"{k} {counts[DATA_SOURCE_PREFIX + k]}" for k in kinds)
    elapsed = (time.monotonic() - started) / 60
    knobs = (
        f"Testbed: trap share {testbed.trap_share}, warm-up error rate {testbed.warmup_error_rate}; "
        f"{args.steps} steps of {args.batch_size} prompts × {args.samples} responses; seeds 0–{args.seeds - 1}; "
        f"{len(test)} validation problems ({per_kind}). "
        f"Training wall time, all runs: {wall / 60:.1f} min (this invocation: {elapsed:.1f} min)."
    )
    text = ["# Label efficiency on the testbed", "", f"Accuracy: {METRIC}.", "", knobs, "", *table, ""]
    text += [*verdict(runs), ""]
    (args.out / "study.md").write_text("\n".join(text))
    print("\n".join(text), flush=True)
    report = build_report(args.out)
    print(f"plots and report: {report.markdown.parent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
