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
import textwrap
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coact_verl.data.prepare import prepare
from coact_verl.data.tiny import build_tiny_model
from coact_verl.launch import TrainerRun, run_trainer
from coact_verl.testbed import TRAP_KINDS, TestbedConfig, prepare_testbed, testbed_overrides

DEMO_STEPS = 6
DEMO_LR = 2e-4  # gentler than the study's 5e-4: a few steps should not shake the kinds it already solves
DEMO_BATCH = 16  # prompts per step
DEMO_SAMPLES = 8  # responses per prompt
DEMO_ORACLE_SHARE = 0.2  # oracle labels per step, as a share of the step's prompts
DEMO_TESTBED = TestbedConfig(trap_share=0.3)
DEMO_VALIDATION = 100  # held-out problems, sampled 8 times each before and after training
#: Agreement bands for the per-step precision of the majority answer: (label, lower bound inclusive).
BANDS = (("<0.5", 0.0), ("0.5-0.75", 0.5), ("0.75-1", 0.75), ("=1", 1.0))
BAND_WIDTH = 11  # characters per band in the per-step table


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


def read_groups(dump: Path, gold: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
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
    groups: list[dict[str, Any]] = []
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


def band_precision(groups: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    """``{band: (groups, share whose majority answer is right)}`` over :data:`BANDS`."""
    out = {}
    for i, (label, low) in enumerate(BANDS):
        high = BANDS[i + 1][1] if i + 1 < len(BANDS) else 1.01
        members = [g for g in groups if low <= g["agreement"] < high]
        if members:
            out[label] = (len(members), sum(g["majority_correct"] for g in members) / len(members))
    return out


def _gold_table(assets: dict[str, Path]) -> dict[str, tuple[str, str]]:
    import pandas as pd  # type: ignore[import-untyped]

    table = {}
    for split in ("train", "test"):
        rows = pd.read_parquet(assets[split])
        answers = dict(
            zip(*(pd.read_parquet(assets[f"{split}_gold"])[c] for c in ("prompt_id", "answer")), strict=True)
        )
        for source, extra in zip(rows["data_source"], rows["extra_info"], strict=True):
            table[extra["question"]] = (answers[extra["prompt_id"]], source.removeprefix("testbed/"))
    return table


def _kind_accuracy(groups: list[dict[str, Any]]) -> dict[str, float]:
    kinds = sorted({g["kind"] for g in groups})
    return {
        k: sum(g["sample_accuracy"] for g in groups if g["kind"] == k) / sum(g["kind"] == k for g in groups)
        for k in kinds
    }


def _write_eval(groups: list[dict[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"kind": g["kind"], "agreement": g["agreement"], "majority_correct": g["majority_correct"]} for g in groups]
    (folder / "eval.json").write_text(json.dumps({"summary": {"problems": len(rows)}, "rows": rows}, indent=1))


# ------------------------------------------------------------------------------------------------- the demo


def run_demo(
    workdir: str | Path = "demo_run", steps: int | None = None, extra_overrides: list[str] | None = None
) -> TrainerRun:
    """Run the demo, print its story and write ``<workdir>/report/``; returns the run (``returncode`` 0 on success).

    Raises:
        ValueError: ``steps`` is below 1.
    """
    steps = DEMO_STEPS if steps is None else steps
    if steps < 1:
        raise ValueError(f"the demo needs at least one training step, got steps={steps}")
    workdir = Path(workdir).resolve()
    print("coact-verl demo: building the testbed model (first run only, about a minute) ...", flush=True)
    assets = prepare_testbed(workdir / "assets", DEMO_TESTBED, test_count=DEMO_VALIDATION)
    for stale in [*workdir.glob("oracle.sqlite*"), workdir / "metrics.jsonl"]:  # a fresh label budget each run
        stale.unlink(missing_ok=True)
    for folder in ("rollouts", "validation", "eval_before", "eval_after", "report", "checkpoints"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    overrides = [
        *testbed_overrides(assets, workdir, steps, batch_size=DEMO_BATCH, samples=DEMO_SAMPLES),
        "coact.router.policy=coact",
        f"coact.router.oracle_share_per_step={DEMO_ORACLE_SHARE}",
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
    intro = (
        f"The model answers five kinds of word problems; on {traps} it learned a wrong rule, so most of its"
        f" {DEMO_SAMPLES} answers agree on a wrong number. Each step CoAct sends the groups it trusts least (low"
        " agreement, unlike the prompts the oracle already verified) to the oracle, within a budget of about"
        f" {DEMO_ORACLE_SHARE:.0%} of the step's prompts, and labels the rest with their majority answer:"
        f" {steps} GRPO steps of {DEMO_BATCH} prompts through verl on CPU."
    )
    print(*textwrap.wrap(intro, width=110), f"verl's log: {workdir / 'train.log'}", sep="\n", flush=True)
    env = {"VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl")}
    run = run_trainer("coact_grpo_cpu", overrides, workdir / "train.log", echo=False, timeout_s=900, extra_env=env)
    if run.returncode != 0:
        print(run.tail(40), flush=True)
        print(f"demo failed with exit code {run.returncode}; full log: {run.log_path}", flush=True)
        return run
    gold = _gold_table(assets)
    tell_story(workdir, run.steps, gold, steps)
    return run


def tell_story(
    workdir: Path, step_metrics: dict[int, dict[str, float]], gold: dict[str, tuple[str, str]], steps: int
) -> None:
    """Print the per-step table and the summary of a finished demo run in ``workdir`` and write its report.

    ``step_metrics``: verl's logged metrics by step (step 0: the validation before training); ``gold``: question
    -> (answer, kind) of every training and validation problem.
    """
    from coact_verl.report.build import build_report

    legend = (
        f"Per training step ({DEMO_BATCH} prompts, {DEMO_SAMPLES} answers each; a group's agreement is the share of"
        " its answers that match its most common one): oracle labels spent (total so far); the router's shares of"
        " prompts self-labelled / sent to the oracle / dropped; groups whose majority answer was wrong, relabelled"
        " by the oracle (the right minority rewarded) or self-labelled (the wrong answer reinforced); and"
        " self-label precision, the share of groups whose majority answer is right, per agreement band (groups)."
    )
    print("", *textwrap.wrap(legend, width=110), "", sep="\n", flush=True)
    bands = "".join(f"{label:{BAND_WIDTH}s}" for label, _ in BANDS).rstrip()
    print(f"{'':4s} | {'':14s} | {'':20s} | {'':30s} | self-label precision by agreement band", flush=True)
    print(f"step | labels (total) | self / oracle / drop | wrong: relabelled / reinforced | {bands}", flush=True)
    spent_before, fixed, reinforced = 0.0, 0, 0
    trained: list[dict[str, Any]] = []  # every training group, for the pooled row
    route_sums = [0.0, 0.0, 0.0]
    for step, metrics in sorted(step_metrics.items()):
        if step == 0:  # validation before training, not a training step
            continue
        spent = metrics.get("coact/oracle/budget_spent", spent_before)
        fractions = [metrics.get(f"coact/route/{r}_frac", 0.0) for r in ("self", "oracle", "drop")]
        route_sums = [a + b for a, b in zip(route_sums, fractions, strict=True)]
        dump = workdir / "rollouts" / f"{step}.jsonl"
        groups = read_groups(dump, gold) if dump.is_file() else []
        trained += groups
        step_fixed, step_reinforced = _relabelled_and_reinforced(groups)
        fixed, reinforced = fixed + step_fixed, reinforced + step_reinforced
        labels = f"{spent - spent_before:3.0f} ({spent:3.0f})"
        print(_table_row(f"{step:4d}", labels, fractions, step_fixed, step_reinforced, groups), flush=True)
        spent_before = spent
    steps_run = max(len(step_metrics) - (0 in step_metrics), 1)
    means = [total / steps_run for total in route_sums]
    print(_table_row(" all", f"{spent_before:3.0f}", means, fixed, reinforced, trained), flush=True)
    before = read_groups(workdir / "validation" / "0.jsonl", gold)
    after = read_groups(workdir / "validation" / f"{steps}.jsonl", gold)
    _write_eval(before, workdir / "eval_before")
    _write_eval(after, workdir / "eval_after")
    report = build_report(workdir)
    prompts = DEMO_BATCH * steps
    print(summary(before, after, spent_before, steps, fixed, reinforced, prompts=prompts), flush=True)
    pngs = ", ".join(figure.file for figure in report.figures if figure.file is not None)
    print(f"\nReport: {report.markdown} with its figures ({pngs}) in {report.markdown.parent}", flush=True)


def _relabelled_and_reinforced(groups: list[dict[str, Any]]) -> tuple[int, int]:
    """Of the groups whose majority answer is wrong and that trained on one rewarded answer: how many rewarded
    the right answer (relabelled by the oracle) and how many the wrong majority (self-labelled, reinforced).

    A unanimous wrong group has no right answer to reward and trains nothing: not counted.
    """
    wrong = [g for g in groups if not g["majority_correct"] and g["label_correct"] is not None]
    relabelled = sum(bool(g["label_correct"]) for g in wrong)
    reinforced = sum(not g["label_correct"] and 0.5 <= g["agreement"] < 1.0 for g in wrong)
    return relabelled, reinforced


def _table_row(
    step: str, labels: str, routes: list[float], relabelled: int, reinforced: int, groups: list[dict[str, Any]]
) -> str:
    """One line of the per-step table; its columns line up under the header printed by :func:`tell_story`."""
    shares = " / ".join(f"{share:.2f}" for share in routes)
    wrong = f"{relabelled:3d} / {reinforced}"
    precision = band_precision(groups)
    cells = [f"{precision[label][1]:.2f} ({precision[label][0]})" if label in precision else "-" for label, _ in BANDS]
    bands = "".join(f"{cell:{BAND_WIDTH}s}" for cell in cells).rstrip()
    return f"{step} | {labels:14s} | {shares:20s} | {wrong:30s} | {bands}"


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def summary(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    labels: float,
    steps: int,
    fixed: int = 0,
    reinforced: int = 0,
    *,
    prompts: int | None = None,
) -> str:
    """The closing text: accuracy per kind before and after, the labels spent and what they did, and how well
    agreement predicted correctness before training; every claim in it follows from the numbers given.

    ``before``/``after``: validation groups (:func:`read_groups`); ``labels``: oracle labels charged;
    ``fixed``/``reinforced``: wrong majorities relabelled by the oracle / self-labelled during training;
    ``prompts``: training prompts seen (default ``DEMO_BATCH * steps``).
    """
    prompts = prompts if prompts is not None else DEMO_BATCH * steps
    acc_before, acc_after = _kind_accuracy(before), _kind_accuracy(after)
    lines = [
        "",
        f"Accuracy on {len(before)} held-out problems (share of {DEMO_SAMPLES} sampled answers that are right),"
        f" before -> after {steps} steps:",
    ]
    for kind in acc_before:
        mark = " (trap)" if kind in TRAP_KINDS else ""
        lines.append(f"  {kind + mark:16s} {acc_before[kind]:.2f} -> {acc_after.get(kind, float('nan')):.2f}")
    overall = [sum(g["sample_accuracy"] for g in gs) / max(len(gs), 1) for gs in (before, after)]
    lines.append(f"  {'all':16s} {overall[0]:.2f} -> {overall[1]:.2f}")

    bands = band_precision(before)
    unanimous = bands.get("=1", (0, float("nan")))[1]
    split = _share([g["majority_correct"] for g in before if g["agreement"] < 1.0])
    predicted = unanimous - split >= 0.2  # nan compares False: no verdict without both kinds of problems
    by_band = ", ".join(
        f"{share:.0%} of {n} " + ("when unanimous" if label == "=1" else f"at agreement {label}")
        for label, (n, share) in bands.items()
    )
    traps = [g for g in before if g["kind"] in TRAP_KINDS]
    trap_agreement = sum(g["agreement"] for g in traps) / max(len(traps), 1)
    trap_wrong = 1.0 - _share([g["majority_correct"] for g in traps])
    trap_acc = [_share_of_kinds(gs, TRAP_KINDS) for gs in (before, after)]
    text = [
        f"Summary: {steps} GRPO steps on {prompts} prompts used {labels:.0f} oracle labels"
        f" ({labels / max(prompts, 1):.0%} of the prompts).",
        f"Before training, agreement {'predicted' if predicted else 'did not predict'} correctness: on held-out"
        f" problems the majority answer was right on {by_band}.",
    ]
    if traps and trap_wrong >= 0.5:
        text.append(
            f"The trap kinds ({', '.join(TRAP_KINDS)}) are the exception: their majority answer is wrong on"
            f" {trap_wrong:.0%} of problems behind agreement {trap_agreement:.2f} on average, so self-labels"
            " reinforce the wrong rule there and only oracle labels reward the right minority."
        )
    text.append(
        f"During training the oracle relabelled {fixed} wrong majorities and {reinforced} were self-labelled and"
        f" reinforced; accuracy on the trap kinds went from {trap_acc[0]:.2f} to {trap_acc[1]:.2f}, overall"
        f" from {overall[0]:.2f} to {overall[1]:.2f}."
    )
    if trap_acc[1] - trap_acc[0] < 0.05:
        text.append(
            f"{steps} steps do not fix the trap kinds; benchmarks/label_efficiency/ compares CoAct's router with"
            " other ways of spending the same labels over longer runs."
        )
    lines += ["", *textwrap.wrap(" ".join(text), width=110)]
    return "\n".join(lines)


def _share_of_kinds(groups: list[dict[str, Any]], kinds: tuple[str, ...]) -> float:
    """Mean sample accuracy over the groups of ``kinds``."""
    values = [g["sample_accuracy"] for g in groups if g["kind"] in kinds]
    return sum(values) / len(values) if values else float("nan")
