"""The CPU demo: CoAct's story on the testbed in miniature, through verl's own entrypoint.

A small model, warmed up on five kinds of word problems, is confidently wrong on two of them (the *trap*
kinds of :mod:`coact_verl.testbed`). The demo trains it for a few CoAct GRPO steps with a 20% oracle budget
(``python -m verl.trainer.main_ppo --config-name coact_grpo_cpu``) and prints, per step, the labels spent,
the routes and how often the majority answer is right in each agreement band; then accuracy per kind before
and after, a short summary, and the report's figures in ``<workdir>/report/``.

:func:`prepare_demo_assets` and :func:`demo_overrides` keep the tiny arithmetic model and data that the tests
and the step benchmark use.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from coact_verl.data.prepare import prepare
from coact_verl.data.tiny import build_tiny_model
from coact_verl.launch import TrainerRun, run_trainer
from coact_verl.testbed import TRAP_KINDS, TestbedConfig, prepare_testbed, testbed_overrides

DEMO_STEPS = 6
DEMO_LR = 2e-4  # gentler than the study's 5e-4: a few steps should not shake the kinds it already solves
DEMO_BATCH = 16  # prompts per step
DEMO_SAMPLES = 8  # responses per prompt
DEMO_TESTBED = TestbedConfig(trap_share=0.3)
DEMO_VALIDATION = 100  # held-out problems, sampled 8 times each before and after training
#: Agreement bands for the per-step precision of the majority answer: (label, lower bound inclusive).
BANDS = (("<0.5", 0.0), ("0.5-0.75", 0.5), ("0.75-1", 0.75), ("=1", 1.0))


def prepare_demo_assets(workdir: Path, warmup_steps: int = 300) -> tuple[Path, dict[str, Path]]:
    """Tiny arithmetic model + data under ``workdir`` (reused when already there); for tests and benchmarks."""
    model_dir = workdir / "tiny_model"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, warmup_steps=warmup_steps)
    data = prepare("arithmetic", None, workdir / "data")
    return model_dir, data


def demo_overrides(model_dir: Path, data: dict[str, Path], workdir: Path, steps: int) -> list[str]:
    """Overrides of ``coact_grpo_cpu`` for the tiny arithmetic model and data."""
    return [
        f"data.train_files={data['train']}",
        f"data.val_files={data['test']}",
        f"actor_rollout_ref.model.path={model_dir}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"coact.oracle.gold_path={data['train_gold']}",
        f"coact.oracle.db_path={workdir / 'oracle.sqlite'}",
    ]


# ------------------------------------------------------------------------------------------- reading dumps


def _answer(text: str) -> str | None:
    from coact_verl.consistency import extract_answer

    return extract_answer(text, "gsm8k")


def _question_of(prompt_text: str, questions: Iterable[str]) -> str | None:
    return next((q for q in questions if q in prompt_text), None)


def read_groups(dump: Path, gold: dict[str, tuple[str, str]]) -> list[dict]:
    """Groups of one verl generation dump (``<step>.jsonl``): per prompt its kind, agreement in [0, 1],
    whether the majority answer is right, the share of right samples, and whether the rewarded answer (the
    label the group trained on; ``None`` when no single answer was rewarded) is right.

    ``gold`` maps a question to ``(answer, kind)``; rows whose question is unknown are skipped.
    """
    samples: dict[str, list[tuple[str, float]]] = {}
    prompts: dict[str, str] = {}
    for line in dump.read_text().splitlines():
        row = json.loads(line)
        uid = str(row.get("uid", "")).rsplit("_", 2)[0]
        samples.setdefault(uid, []).append((row["output"], float(row.get("score") or 0.0)))
        prompts[uid] = row["input"]
    index = {q: q for q in gold}
    groups = []
    for uid, outputs in samples.items():
        question = _question_of(prompts[uid], index)
        if question is None:
            continue
        answer, kind = gold[question]
        answers = [_answer(text) for text, _ in outputs]
        votes = Counter(a for a in answers if a is not None)
        majority, count = votes.most_common(1)[0] if votes else (None, 0)
        rewarded = {a for a, (_, score) in zip(answers, outputs, strict=True) if score > 0}
        groups.append(
            {
                "kind": kind,
                "agreement": count / len(outputs),
                "majority_correct": majority == answer,
                "sample_accuracy": sum(a == answer for a in answers) / len(outputs),
                # training dumps: which answer was rewarded (the group's label), when exactly one was
                "label_correct": (next(iter(rewarded)) == answer) if len(rewarded) == 1 else None,
            }
        )
    return groups


def band_precision(groups: list[dict]) -> dict[str, tuple[int, float]]:
    """``{band: (groups, share whose majority answer is right)}`` over :data:`BANDS`."""
    out = {}
    for i, (label, low) in enumerate(BANDS):
        high = BANDS[i + 1][1] if i + 1 < len(BANDS) else 1.01
        members = [g for g in groups if low <= g["agreement"] < high]
        if members:
            out[label] = (len(members), sum(g["majority_correct"] for g in members) / len(members))
    return out


def _gold_table(assets: dict[str, Path]) -> dict[str, tuple[str, str]]:
    import pandas as pd

    table = {}
    for split in ("train", "test"):
        rows = pd.read_parquet(assets[split])
        answers = dict(
            zip(*(pd.read_parquet(assets[f"{split}_gold"])[c] for c in ("prompt_id", "answer")), strict=True)
        )
        for source, extra in zip(rows["data_source"], rows["extra_info"], strict=True):
            table[extra["question"]] = (answers[extra["prompt_id"]], source.removeprefix("testbed/"))
    return table


def _kind_accuracy(groups: list[dict]) -> dict[str, float]:
    kinds = sorted({g["kind"] for g in groups})
    return {
        k: sum(g["sample_accuracy"] for g in groups if g["kind"] == k) / sum(g["kind"] == k for g in groups)
        for k in kinds
    }


def _write_eval(groups: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"kind": g["kind"], "agreement": g["agreement"], "majority_correct": g["majority_correct"]} for g in groups]
    (folder / "eval.json").write_text(json.dumps({"summary": {"problems": len(rows)}, "rows": rows}, indent=1))


# ------------------------------------------------------------------------------------------------- the demo


def run_demo(
    workdir: str | Path = "demo_run", steps: int | None = None, extra_overrides: list[str] | None = None
) -> TrainerRun:
    """Run the demo, print its story and write ``<workdir>/report/``; returns the run (``returncode`` 0 on success)."""
    from coact_verl.report.build import build_report

    steps = steps or DEMO_STEPS
    workdir = Path(workdir).resolve()
    print("coact-verl demo: building the testbed model (first run only, about a minute) ...", flush=True)
    assets = prepare_testbed(workdir / "assets", DEMO_TESTBED, test_count=DEMO_VALIDATION)
    for stale in [*workdir.glob("oracle.sqlite*"), workdir / "metrics.jsonl"]:  # a fresh label budget each run
        stale.unlink(missing_ok=True)
    for folder in ("rollouts", "validation", "eval_before", "eval_after", "report"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    overrides = [
        *testbed_overrides(assets, workdir, steps, batch_size=DEMO_BATCH, samples=DEMO_SAMPLES),
        "coact.router.policy=coact",
        "coact.router.oracle_share_per_step=0.2",
        f"actor_rollout_ref.actor.optim.lr={DEMO_LR}",
        "trainer.val_before_train=True",
        f"trainer.test_freq={steps}",
        f"actor_rollout_ref.rollout.val_kwargs.n={DEMO_SAMPLES}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        f"trainer.validation_data_dir={workdir / 'validation'}",
        f"trainer.rollout_data_dir={workdir / 'rollouts'}",
        "trainer.logger=[console,file]",
        *(extra_overrides or []),
    ]
    traps = " and ".join(TRAP_KINDS)
    print(
        f"The model answers five kinds of word problems; on {traps} it learned a wrong rule, so most of its\n"
        f"{DEMO_SAMPLES} answers agree on a wrong number. CoAct self-labels agreeing groups and spends a 20% oracle\n"
        f"budget on the rest: {steps} GRPO steps of {DEMO_BATCH} prompts through verl on CPU.\n"
        f"verl's log: {workdir / 'train.log'}",
        flush=True,
    )
    env = {"VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl")}
    run = run_trainer("coact_grpo_cpu", overrides, workdir / "train.log", echo=False, timeout_s=900, extra_env=env)
    if run.returncode != 0:
        print(run.tail(40), flush=True)
        print(f"demo failed with exit code {run.returncode}; full log: {run.log_path}", flush=True)
        return run
    gold = _gold_table(assets)
    print(
        "\nstep | oracle labels (total) | self / oracle / drop | wrong majorities: relabelled / reinforced"
        " | majority right, by agreement band (groups)",
        flush=True,
    )
    spent_before, fixed, reinforced = 0.0, 0, 0
    for step, metrics in sorted(run.steps.items()):
        if step == 0:  # validation before training, not a training step
            continue
        spent = metrics.get("coact/oracle/budget_spent", spent_before)
        routes = " / ".join(f"{metrics.get(f'coact/route/{r}_frac', 0):.2f}" for r in ("self", "oracle", "drop"))
        dump = workdir / "rollouts" / f"{step}.jsonl"
        groups = read_groups(dump, gold) if dump.is_file() else []
        wrong = [g for g in groups if not g["majority_correct"] and g["label_correct"] is not None]
        step_fixed = sum(g["label_correct"] for g in wrong)
        # a unanimous group has no right answer to reward and trains nothing: not counted
        step_reinforced = sum(not g["label_correct"] and 0.5 <= g["agreement"] < 1.0 for g in wrong)
        fixed, reinforced = fixed + step_fixed, reinforced + step_reinforced
        shown = "  ".join(f"{label}: {share:.2f} ({n})" for label, (n, share) in band_precision(groups).items())
        print(
            f"{step:4d} | {spent - spent_before:3.0f} ({spent:3.0f})             | {routes}   "
            f"| {step_fixed:2d} / {step_reinforced:2d}                                 | {shown}",
            flush=True,
        )
        spent_before = spent
    before = read_groups(workdir / "validation" / "0.jsonl", gold)
    after = read_groups(workdir / "validation" / f"{steps}.jsonl", gold)
    _write_eval(before, workdir / "eval_before")
    _write_eval(after, workdir / "eval_after")
    report = build_report(workdir)
    print(summary(before, after, spent_before, steps, fixed, reinforced), flush=True)
    print(f"report and figures: {report.markdown.parent}", flush=True)
    return run


def summary(
    before: list[dict], after: list[dict], labels: float, steps: int, fixed: int = 0, reinforced: int = 0
) -> str:
    """The closing paragraph: accuracy per kind before and after, labels spent, what the labels did, and how
    well agreement predicted correctness before training."""
    acc_before, acc_after = _kind_accuracy(before), _kind_accuracy(after)
    lines = ["", "accuracy on held-out problems (share of sampled answers that are right), before -> after:"]
    for kind in acc_before:
        mark = " (trap)" if kind in TRAP_KINDS else ""
        lines.append(f"  {kind + mark:16s} {acc_before[kind]:.2f} -> {acc_after.get(kind, float('nan')):.2f}")
    overall = [sum(g["sample_accuracy"] for g in gs) / max(len(gs), 1) for gs in (before, after)]
    lines.append(f"  {'all':16s} {overall[0]:.2f} -> {overall[1]:.2f}")
    unanimous = band_precision(before).get("=1", (0, float("nan")))[1]
    split = [g["majority_correct"] for g in before if g["agreement"] < 1.0]
    split_precision = sum(split) / len(split) if split else float("nan")
    trap_agreement = [g["agreement"] for g in before if g["kind"] in TRAP_KINDS]
    mean_trap = sum(trap_agreement) / max(len(trap_agreement), 1)
    lines += [
        "",
        f"Summary: {steps} steps, {labels:.0f} oracle labels for {DEMO_BATCH * steps} prompts. Before training, the",
        f"model's agreement predicted its correctness: unanimous majorities were right {unanimous:.0%} of the time,",
        f"split ones {split_precision:.0%}. The trap kinds are the exception: agreement {mean_trap:.2f} on average",
        "behind a wrong majority, which majority vote alone reinforces. During training the oracle relabelled",
        f"{fixed} wrong majorities (rewarding the right minority instead) and {reinforced} were self-labelled and",
        "reinforced. Fixing a trap kind takes more steps than the demo runs: see",
        "benchmarks/label_efficiency/ for the full study.",
    ]
    return "\n".join(lines)
