"""Step time of CoAct GRPO and CoAct DPO against vanilla verl GRPO, in one run, on the same tiny model,
data and trainer shapes (CPU backend).

- vanilla: verl's stock GRPO (naive reward manager, verl's GSM8K rule on gold answers);
- coact_grpo: the CoAct group step in the rollout workers, gold oracle service, coact trainer;
- coact_dpo: the same with the pairwise DPO(+NLL) loss and verl's reference worker.

Step time is the median of verl's ``timing_s/step`` over steps 2..N (step 1 includes warm-up).
Usage: python benchmarks/bench_step.py [--steps 6] [--workdir bench_step_run]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd

from coact_verl.demo import demo_overrides, prepare_demo_assets
from coact_verl.launch import run_trainer

CONFIGS = Path(__file__).with_name("configs")


def gold_labelled_copy(train: Path, gold: Path, out: Path) -> Path:
    """The training prompts with their gold answers, in the form verl's GSM8K rule reads."""
    frame = pd.read_parquet(train)
    answers = dict(zip(pd.read_parquet(gold)["prompt_id"], pd.read_parquet(gold)["answer"], strict=True))
    frame["data_source"] = "openai/gsm8k"
    frame["reward_model"] = [{"style": "rule", "ground_truth": answers[e["prompt_id"]]} for e in frame["extra_info"]]
    frame.to_parquet(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workdir", default="bench_step_run")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    model, data = prepare_demo_assets(workdir)
    labelled = gold_labelled_copy(data["train"], data["train_gold"], workdir / "train_gold_labelled.parquet")
    coact = demo_overrides(model, data, workdir, args.steps)  # unlabelled prompts, gold oracle service
    vanilla = [f"data.train_files={labelled}"] + [o for o in coact[1:] if not o.startswith("coact.")]
    runs = {
        "vanilla_grpo": ("vanilla_grpo_cpu", CONFIGS, vanilla),
        "coact_grpo": ("coact_grpo_cpu", None, coact),
        "coact_dpo": ("coact_dpo_cpu", None, coact),
    }
    medians = {}
    for name, (config, path, overrides) in runs.items():
        for stale in workdir.glob("oracle.sqlite*"):
            stale.unlink()
        run = run_trainer(config, overrides, workdir / f"{name}.log", config_path=path, timeout_s=1200)
        if run.returncode != 0:
            raise SystemExit(f"{name} failed ({run.returncode}):\n{run.tail(40)}")
        times = run.metric("timing_s/step")[1:]
        medians[name] = statistics.median(times)
        print(f"{name:13s} step times (s): {' '.join(f'{t:.2f}' for t in times)}  median {medians[name]:.2f}")
    base = medians["vanilla_grpo"]
    print()
    print("| run | median step (s) | ÷ vanilla GRPO |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} | {value / base:.3f} |")
    ratio = medians["coact_grpo"] / base
    verdict = "met" if ratio <= 1.05 else "NOT met"
    print(f"\nCoAct GRPO / vanilla GRPO step time: {ratio:.3f} (target <= 1.05: {verdict})")
    print(f"CoAct DPO / vanilla GRPO step time: {medians['coact_dpo'] / base:.3f}")


if __name__ == "__main__":
    main()
