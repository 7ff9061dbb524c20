"""Offline scoring of saved rollouts with the same extraction and clustering code as training.

Input: JSONL, one row per prompt: ``{"id": ..., "responses": ["...", ...], "gold": "..."}`` (``gold``, the
reference final answer, is optional; ``id`` defaults to the line number; an optional ``finished`` list of booleans,
one per response, marks with ``false`` the responses the rollout cut at its length limit, which then have an answer
only where they wrote one explicitly, as in training). Output: JSONL, one row per input row::

    {"id", "n", "answers", "cluster_of", "cluster_sizes", "cluster_answers", "majority", "agreement",
     "entropy", "rewards"}                       # answers: the extracted final answer per response (null: none)
                                                 # rewards: per response, 1.0 if in the majority cluster
    + {"gold", "gold_answer", "gold_cluster", "gold_match", "majority_correct"} when the row has a gold answer

``gold_answer`` is the gold's final answer as the checker reads it (a bare answer stays as it is, a reference
solution yields its boxed or marked answer); ``gold_match`` holds, per response, whether its extracted answer is
equivalent to it, so a run's rewards can be audited response by response.

The output is written to a temporary file next to ``out_path`` and renamed at the end, so a failed run never
leaves a half-written file behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency.equivalence import AnswerClusterer
from coact_verl.consistency.extract import extract_answer
from coact_verl.consistency.groups import label_clusters, rewards_for_cluster, score_groups
from coact_verl.tasks import TASKS


def score_rollouts(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    task: str,
    config: ConsistencyConfig | None = None,
    *,
    batch_rows: int = 256,
) -> dict[str, Any]:
    """Score every row of ``in_path`` and write per-row statistics to ``out_path``.

    Args:
        in_path: JSONL rollouts (see the module docstring).
        out_path: JSONL output; replaced atomically on success.
        task: ``gsm8k``, ``math`` or ``numeric``.
        config: clustering settings (``task`` is overridden by the ``task`` argument).
        batch_rows: rows scored together (their math-verify work shares pool round-trips).

    Returns:
        Summary: ``rows``, ``responses``, ``no_answer_rate``, ``mean_agreement``, ``mean_entropy``,
        ``rows_with_gold``, ``majority_accuracy`` and ``response_accuracy`` (share of responses whose answer matches
        the gold; ``None`` without gold), ``seconds``, ``clusterer`` counters.

    Raises:
        ValueError: malformed input; the message names the file and line.
        FileNotFoundError: ``in_path`` does not exist.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.is_file():
        raise FileNotFoundError(f"rollout file not found: {in_path}")
    base = config if config is not None else ConsistencyConfig(task=task)
    config = dataclasses.replace(base, task=task)
    totals = {"rows": 0, "responses": 0, "no_answer": 0, "agreement": 0.0, "entropy": 0.0, "gold": 0, "correct": 0}
    totals.update(gold_responses=0, gold_matches=0)
    start = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    try:
        with AnswerClusterer(config) as clusterer, os.fdopen(fd, "w", encoding="utf-8") as out:
            for batch in _batches(_read_rows(in_path), batch_rows):
                for row in _score_batch(batch, task, clusterer):
                    out.write(json.dumps(row) + "\n")
                    _accumulate(totals, row)
            counters = clusterer.stats()
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    rows = totals["rows"]
    return {
        "rows": rows,
        "responses": totals["responses"],
        "no_answer_rate": totals["no_answer"] / totals["responses"] if totals["responses"] else 0.0,
        "mean_agreement": totals["agreement"] / rows if rows else 0.0,
        "mean_entropy": totals["entropy"] / rows if rows else 0.0,
        "rows_with_gold": totals["gold"],
        "majority_accuracy": totals["correct"] / totals["gold"] if totals["gold"] else None,
        "response_accuracy": totals["gold_matches"] / totals["gold_responses"] if totals["gold_responses"] else None,
        "seconds": round(time.perf_counter() - start, 3),
        "clusterer": counters,
        "out_path": str(out_path),
    }


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)``; validate each row and name the line of any problem."""
    with path.open("r", encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            responses = row.get("responses")
            if not isinstance(responses, list) or not responses:
                raise ValueError(f"{where}: 'responses' must be a non-empty list of strings")
            bad = [i for i, r in enumerate(responses) if not isinstance(r, str)]
            if bad:
                raise ValueError(f"{where}: responses[{bad[0]}] is {type(responses[bad[0]]).__name__}, not a string")
            finished = row.get("finished")
            if finished is not None and (
                not isinstance(finished, list)
                or len(finished) != len(responses)
                or not all(isinstance(f, bool) for f in finished)
            ):
                raise ValueError(f"{where}: 'finished' must be a list of {len(responses)} booleans, one per response")
            gold = row.get("gold")
            if gold is not None and not isinstance(gold, (str, int, float)):
                raise ValueError(f"{where}: 'gold' must be a string or a number, got {type(gold).__name__}")
            row.setdefault("id", lineno)
            yield lineno, row


def _batches(rows: Iterator[tuple[int, dict[str, Any]]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for _, row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _score_batch(rows: list[dict[str, Any]], task: str, clusterer: AnswerClusterer) -> list[dict[str, Any]]:
    finished = [row.get("finished") for row in rows]
    stats = score_groups([row["responses"] for row in rows], task, clusterer, finished)
    with_gold = [i for i, row in enumerate(rows) if row.get("gold") is not None]
    gold_answers = {i: extract_answer(str(rows[i]["gold"]), task, reference=True) for i in with_gold}
    gold_clusters = label_clusters([stats[i] for i in with_gold], [gold_answers[i] for i in with_gold], clusterer)
    gold_of = dict(zip(with_gold, gold_clusters, strict=True))
    out = []
    for i, (row, s) in enumerate(zip(rows, stats, strict=True)):
        record: dict[str, Any] = {
            "id": row["id"],
            "n": s.n,
            "answers": list(s.answers),
            "cluster_of": list(s.cluster_of),
            "cluster_sizes": list(s.cluster_sizes),
            "cluster_answers": list(s.cluster_answers),
            "majority": s.majority_answer,
            "agreement": s.agreement,
            "entropy": s.entropy,
            "rewards": rewards_for_cluster(s, 0 if s.cluster_sizes else -1),
        }
        if i in gold_of:
            record["gold"] = str(row["gold"])
            record["gold_answer"] = gold_answers[i]
            record["gold_cluster"] = gold_of[i]
            record["gold_match"] = [gold_of[i] >= 0 and c == gold_of[i] for c in s.cluster_of]
            record["majority_correct"] = bool(s.cluster_sizes) and gold_of[i] == 0
        out.append(record)
    return out


def _accumulate(totals: dict[str, Any], row: dict[str, Any]) -> None:
    totals["rows"] += 1
    totals["responses"] += row["n"]
    totals["no_answer"] += sum(1 for c in row["cluster_of"] if c < 0)
    totals["agreement"] += row["agreement"]
    totals["entropy"] += row["entropy"]
    if "majority_correct" in row:
        totals["gold"] += 1
        totals["correct"] += int(row["majority_correct"])
        totals["gold_responses"] += row["n"]
        totals["gold_matches"] += sum(row["gold_match"])


# --------------------------------------------------------------------------- command line


def add_score_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``score`` on an ``argparse`` subparsers object; the parsed args carry ``func=run_score_command``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="score saved rollouts offline (majority, agreement, entropy, rewards)",
        description="Score JSONL rollouts {id, responses, gold?} with the training-time answer clustering.",
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="answer format of the responses")
    parser.add_argument("--in", dest="in_path", required=True, type=Path, help="input JSONL rollouts")
    parser.add_argument("--out", dest="out_path", required=True, type=Path, help="output JSONL statistics")
    parser.add_argument("--no-math-verify", action="store_true", help="canonical-form clustering only (fast)")
    parser.add_argument("--workers", type=int, default=1, help="math-verify worker processes")
    parser.add_argument("--timeout", type=float, default=5.0, help="hard timeout of one math-verify call, s")
    parser.add_argument("--batch-rows", type=int, default=256, help="rows whose verification is batched")
    parser.set_defaults(func=run_score_command)
    return parser


def run_score_command(args: argparse.Namespace) -> int:
    """Run ``score`` from parsed arguments; print the summary as JSON. Returns the exit code (2 on bad input)."""
    try:
        config = ConsistencyConfig(
            task=args.task,
            use_math_verify=not args.no_math_verify,
            verify_workers=args.workers,
            verify_timeout_s=args.timeout,
        )
        summary = score_rollouts(args.in_path, args.out_path, args.task, config, batch_rows=args.batch_rows)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"coact-verl score: error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m coact_verl.consistency.offline score --task ... --in ... --out ...``."""
    parser = argparse.ArgumentParser(prog="coact_verl.consistency.offline")
    add_score_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
