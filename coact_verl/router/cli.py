"""``coact-verl route``: what the router would have done with saved rollouts.

Input: the JSONL that ``coact-verl score`` writes (one row per prompt with ``id``, ``n``, ``agreement``,
``cluster_sizes``, ...; optionally ``prompt`` text, ``task``, and with gold ``gold_cluster`` /
``majority_correct``). ``--prompts`` joins prompt texts by ``id`` from another JSONL (e.g. the rollouts given
to ``score``); prompts feed the k-NN branch's embedder. Rows are cut into steps of ``--step-size`` groups
(file order, or shuffled with ``--seed``) and routed as training does: ``--mode step`` routes a whole step
at once (``Router.route_step``), ``--mode online`` streams its groups one at a time (``Router.route_online``;
``--unannounced`` hides the step size from the router, as rollout workers do not know it). When a row has gold, the
oracle's answer is simulated from it (the majority confirmed iff ``majority_correct``; some response right
iff ``gold_cluster >= 0``) and fed back to the router, so the k-NN reference set, branch yields,
calibration and audit evolve as in training. Rows without gold teach the router nothing.

Output: one JSON line per group (``id``, ``step``, ``action``, ``reason``, ``band``, ``agreement``), and a
summary printed as JSON (``--summary`` also writes it to a file): groups, steps, budget and spent, spend
ratio, the spendable budget (Σ over steps of min(step budget, groups the policy may route: unanimous ones only
with spot checks, an audit or a policy that routes them)) and the share of it spent, counts per action and per
reason, and with gold the wrong majorities caught, the best possible
(Σ over steps of min(step budget, wrong majorities in the step)), their ratio, and the labels that changed
the training target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coact_verl.config import ROUTER_EMBEDDERS, ROUTER_POLICIES, RouterConfig
from coact_verl.router.bands import GroupView, budget_for_step
from coact_verl.router.router import Router

if TYPE_CHECKING:
    from coact_verl.router.embedding import Embedder


def _read(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "agreement" not in row:
                raise ValueError(f"{path}:{lineno}: expected a 'coact-verl score' row with an 'agreement' field")
            row.setdefault("id", lineno)
            rows.append(row)
    return rows


def _join_prompts(rows: list[dict[str, Any]], path: Path) -> None:
    """Fill ``prompt`` of ``rows`` from a JSONL of ``{id, prompt | question}`` (rows that have one keep it)."""
    texts: dict[str, str] = {}
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                text = row.get("prompt") or row.get("question")
                if text:
                    texts[str(row.get("id", lineno))] = str(text)
    for row in rows:
        if not row.get("prompt") and str(row["id"]) in texts:
            row["prompt"] = texts[str(row["id"])]


def _view(row: dict[str, Any], embedding: np.ndarray | None, task: str | None) -> GroupView:
    sizes = row.get("cluster_sizes")
    n = row.get("n")
    unanimous = None
    if sizes is not None and n:
        unanimous = len(sizes) == 1 and int(sizes[0]) == int(n)
    return GroupView(
        agreement=float(row["agreement"]),
        unanimous=unanimous,
        embedding=embedding,
        prompt_id=str(row["id"]),
        task=row.get("task") or task,
        runner_up=(int(sizes[1]) / int(n)) if sizes is not None and n and len(sizes) > 1 else 0.0,
    )


def _oracle_outcome(row: dict[str, Any]) -> tuple[bool, bool] | None:
    """(majority correct, some response correct) from the row's gold fields, or ``None`` without gold."""
    if "majority_correct" not in row:
        return None
    majority = bool(row["majority_correct"])
    gold_cluster = row.get("gold_cluster")
    return majority, majority or (gold_cluster is not None and int(gold_cluster) >= 0)


def _steps(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def route_rollouts(
    rows: Sequence[dict[str, Any]],
    cfg: RouterConfig,
    *,
    mode: str = "step",
    step_size: int = 64,
    shuffle: bool = False,
    announce: bool = True,
    task: str | None = None,
    embedder: Embedder | None = None,
    budget_total: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Route scored rows as training would; returns (one record per row, summary).

    Args:
        rows: ``coact-verl score`` rows.
        cfg: router settings (``oracle_share_per_step`` is the budget share, ``seed`` also seeds ``shuffle``).
        mode: ``step`` or ``online``.
        step_size: groups per training step.
        shuffle: route in a seeded random order instead of file order.
        announce: online mode only: tell the router each step's size (``False``: it learns it, as the
            rollout workers that do not know how many groups they will see).
        task: answer format for the per-task calibration when a row has no ``task``.
        embedder: prompt embedder for rows with a ``prompt`` (default: the one ``cfg.embedder`` names).
        budget_total: advisory total budget of the run.
    """
    if mode not in ("step", "online"):
        raise ValueError(f"mode must be step or online, got {mode!r}")
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}")
    order = list(rows)
    if shuffle:
        perm = np.random.default_rng(cfg.seed).permutation(len(order))
        order = [order[i] for i in perm]
    if embedder is None and any(r.get("prompt") for r in order):
        from coact_verl.router.embedding import make_embedder

        embedder = make_embedder(cfg.embedder, cfg.embedder_model)
    router = Router(cfg, budget_total=budget_total)
    records: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    carry = 0.0
    budget_sum = best = spendable = 0
    may_route_unanimous = router.policy.routes_unanimous or cfg.spot_check_rate > 0 or cfg.audit_share > 0
    for index, step_rows in enumerate(_steps(order, step_size)):
        prompts = [str(r.get("prompt") or "") for r in step_rows]
        emb = embedder.encode(prompts) if embedder is not None else None
        views = [_view(r, emb[i] if emb is not None and prompts[i] else None, task) for i, r in enumerate(step_rows)]
        budget, carry = budget_for_step(len(step_rows), cfg.oracle_share_per_step, carry)
        budget_sum += budget
        outcomes = [_oracle_outcome(r) for r in step_rows]
        bands = [router.band(v).value for v in views]
        if mode == "step":
            routes = router.route_step(views)
            for view, route, outcome in zip(views, routes, outcomes, strict=True):
                if route.is_oracle and outcome is not None:
                    totals["changed"] += int(bool(router.observe(view, route, *outcome)))
        else:
            router.begin_step(len(step_rows) if announce else None)
            routes = []
            for i, (view, outcome) in enumerate(zip(views, outcomes, strict=True)):
                bands[i] = router.band(view).value
                route = router.route_online(view)
                routes.append(route)
                if route.is_oracle and outcome is not None:
                    totals["changed"] += int(bool(router.observe(view, route, *outcome)))
        wrong_in_step = 0
        for row, view, route, band, outcome in zip(step_rows, views, routes, bands, outcomes, strict=True):
            records.append(
                {
                    "id": row["id"],
                    "step": index,
                    "action": route.action.value,
                    "reason": route.reason.value,
                    "band": band,
                    "agreement": view.agreement,
                }
            )
            totals[f"action/{route.action.value}"] += 1
            totals[f"reason/{route.action.value}/{route.reason.value}"] += 1
            if outcome is not None:
                totals["with_gold"] += 1
                if not outcome[0]:
                    wrong_in_step += 1
                    totals["wrong_majorities"] += 1
                    totals["caught"] += int(route.is_oracle)
                    totals["wrong_self_labelled"] += int(route.is_self)
        best += min(budget, wrong_in_step)
        spendable += min(budget, sum(may_route_unanimous or not v.is_unanimous for v in views))
    spent = totals["action/oracle"]
    summary: dict[str, Any] = {
        "groups": len(order),
        "steps": (len(order) + step_size - 1) // step_size,
        "mode": mode,
        "policy": cfg.policy,
        "budget_share": cfg.oracle_share_per_step,
        "budget": budget_sum,
        "spent": spent,
        "spent_ratio": spent / budget_sum if budget_sum else None,
        "spendable": spendable,
        "spent_of_spendable": spent / spendable if spendable else None,
        "actions": {k.split("/", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("action/")},
        "reasons": {k.split("/", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("reason/")},
        "reference_size": router.reference_size,
        "tau_self": router.tau_self,
    }
    if totals["with_gold"]:
        summary.update(
            {
                "rows_with_gold": totals["with_gold"],
                "wrong_majorities": totals["wrong_majorities"],
                "wrong_majorities_caught": totals["caught"],
                "best_possible": best,
                "caught_of_best": totals["caught"] / best if best else None,
                "wrong_self_labelled": totals["wrong_self_labelled"],
                "labels_that_changed_target": totals["changed"],
            }
        )
        metrics = router.metrics(reset=False)
        summary["branch_yield"] = {
            k.split("/")[3]: round(v, 4) for k, v in metrics.items() if k.endswith("/yield") and "/branch/" in k
        }
        if "coact/audit/precision" in metrics:
            summary["audit"] = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("coact/audit/")}
    return records, summary


def add_route_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``route`` on an ``argparse`` subparsers object (``func=run_route_command``)."""
    parser = subparsers.add_parser(
        "route",
        help="route scored rollouts as training would (what the router would have done)",
        description="Route the JSONL that 'coact-verl score' writes; one line per group plus a JSON summary.",
    )
    parser.add_argument("--in", dest="in_path", required=True, type=Path, help="'coact-verl score' output JSONL")
    parser.add_argument("--out", dest="out_path", required=True, type=Path, help="one routing line per group")
    parser.add_argument("--mode", choices=("step", "online"), default="step")
    parser.add_argument("--policy", choices=ROUTER_POLICIES, default=None, help="default: the configured default")
    parser.add_argument("--budget", type=float, default=0.2, help="oracle share of each step's groups, in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-size", type=int, default=64, help="groups per training step")
    parser.add_argument("--shuffle", action="store_true", help="route in a seeded random order, not file order")
    parser.add_argument("--unannounced", action="store_true", help="online: the router is not told step sizes")
    parser.add_argument("--task", default=None, help="answer format of rows without a 'task' field")
    parser.add_argument("--tau-self", type=float, default=None, help="τ_self (self_label_threshold)")
    parser.add_argument("--knn-share", type=float, default=None)
    parser.add_argument("--spot-check-rate", type=float, default=None)
    parser.add_argument("--audit-share", type=float, default=None)
    parser.add_argument("--self-label-precision", type=float, default=None)
    parser.add_argument("--embedder", choices=ROUTER_EMBEDDERS, default=None)
    parser.add_argument("--embedder-model", default=None, help="the causal LM of --embedder policy (a local path)")
    parser.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="JSONL with 'id' and 'prompt' (or 'question'), e.g. the rollouts given to 'score': prompt texts by id",
    )
    parser.add_argument("--summary", type=Path, default=None, help="also write the summary JSON here")
    parser.set_defaults(func=run_route_command)
    return parser


def _config(args: argparse.Namespace) -> RouterConfig:
    changes: dict[str, Any] = {"oracle_share_per_step": args.budget, "seed": args.seed}
    for arg, name in (
        ("policy", "policy"),
        ("tau_self", "self_label_threshold"),
        ("knn_share", "knn_share"),
        ("spot_check_rate", "spot_check_rate"),
        ("audit_share", "audit_share"),
        ("self_label_precision", "self_label_precision"),
        ("embedder", "embedder"),
        ("embedder_model", "embedder_model"),
    ):
        if getattr(args, arg) is not None:
            changes[name] = getattr(args, arg)
    return dataclasses.replace(RouterConfig(), **changes)


def run_route_command(args: argparse.Namespace) -> int:
    """Run ``route`` from parsed arguments; print the summary. Returns the exit code (2 on bad input)."""
    try:
        cfg = _config(args)
        rows = _read(args.in_path)
        if args.prompts is not None:
            _join_prompts(rows, args.prompts)
        records, summary = route_rollouts(
            rows,
            cfg,
            mode=args.mode,
            step_size=args.step_size,
            shuffle=args.shuffle,
            announce=not args.unannounced,
            task=args.task,
        )
    except (ValueError, FileNotFoundError) as exc:
        sys.stderr.write(f"coact-verl route: error: {exc}\n")
        return 2
    out = Path(args.out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    text = json.dumps(summary, indent=2)
    if args.summary is not None:
        Path(args.summary).write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0
