"""Where each routing policy puts its labels, on simulated scored groups (no model, no service).

Routes the rows of :func:`coact_verl.router.simulate.simulate_rows` with ``route_rollouts`` (what
``coact-verl route`` runs): 20% budget, steps of 64 groups in a seeded shuffled order, in step mode, online
with each step's size known (CoAct's trainer announces it; on verl's stock trainer the drop-in manager gives it)
and online unannounced (a router never told the step size paces by the previous step's). Per set and policy it
prints the mean share of the best possible wrong-majority catches (Σ over steps of min(step budget, wrong
majorities in the step)) and the lowest spend ratio over the seeds.

Sets: a weak model whose errors scatter (4 samples), confident errors clustered by topic (4 and 8 samples), and
small runs of a strong model (200 prompts, 8 samples, 20-50% of groups unanimous), where a label left unspent at
a step's end is 2.5% of the run's budget.

Run: ``python benchmarks/bench_routing.py [--seeds 4] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from coact_verl.config import RouterConfig
from coact_verl.router.cli import route_rollouts
from coact_verl.router.simulate import simulate_rows

SETS: dict[str, dict[str, Any]] = {
    "weak model, scattered errors, n = 4": dict(
        n_prompts=1024, n_samples=4, skill=(1.2, 2.0), confident_wrong=(0.5, 3.0)
    ),
    "confident errors clustered by topic, n = 4": dict(n_prompts=1024, n_samples=4),
    "confident errors clustered by topic, n = 8": dict(n_prompts=1024, n_samples=8),
    "strong model, small runs, n = 8": dict(n_prompts=200, n_samples=8, skill=(4.0, 1.5)),
}
POLICIES = ("lowest_agreement", "coact", "adaptive", "random")
MODES = {"step": ("step", True), "online": ("online", True), "unannounced": ("online", False)}


def measure(set_kw: dict[str, Any], policy: str, seeds: int) -> dict[str, Any]:
    """Mean caught-of-best and min spend ratio per mode over ``seeds`` simulated sets."""
    caught: dict[str, list[float]] = {m: [] for m in MODES}
    spent: dict[str, list[float]] = {m: [] for m in MODES}
    wrong = []
    for seed in range(seeds):
        rows = simulate_rows(seed=seed, **set_kw)
        wrong.append(np.mean([not r["majority_correct"] for r in rows]))
        for name, (mode, announce) in MODES.items():
            _, summary = route_rollouts(
                rows, RouterConfig(policy=policy, seed=seed), mode=mode, step_size=64, shuffle=True, announce=announce
            )
            caught[name].append(summary["caught_of_best"])
            spent[name].append(summary["spent_ratio"])
    return {
        "wrong_majorities": float(np.mean(wrong)),
        **{f"{m}/caught_of_best": float(np.mean(caught[m])) for m in MODES},
        **{f"{m}/min_spent_ratio": float(np.min(spent[m])) for m in MODES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {name: {p: measure(kw, p, args.seeds) for p in POLICIES} for name, kw in SETS.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"share of the best possible wrong-majority catches, step / online / online unannounced ({args.seeds} seeds)")
    print("lowest spend ratio over seeds in brackets\n")
    for name, by_policy in results.items():
        first = next(iter(by_policy.values()))
        print(f"{name} (wrong majorities {first['wrong_majorities']:.0%})")
        for policy, r in by_policy.items():
            cells = " / ".join(f"{r[f'{m}/caught_of_best']:.3f}" for m in MODES)
            spend = " / ".join(f"{r[f'{m}/min_spent_ratio']:.3f}" for m in MODES)
            print(f"  {policy:<17} {cells}   [{spend}]")
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
