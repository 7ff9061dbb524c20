"""One evaluation: load problems, sample n responses each, score them, write ``eval.json`` and ``eval.md``.

``eval.json``::

    {"summary": {"dataset", "task", "model", "src", "n", "backend", "temperature", "top_p", "max_new_tokens",
                 "seed", "seconds", "problems", "samples", "correct_samples", "majority_correct",
                 "pass@1", "pass@n", "maj@n", "no_answer_rate", "mean_agreement"},
     "rows": [{"index", "prompt_id", "question", "gold", "n", "responses", "answers", "cluster_of",
               "cluster_sizes", "cluster_answers", "majority", "agreement", "gold_cluster", "correct",
               "num_correct", "majority_correct"}, ...]}

``correct`` is per sample (shape ``(n,)``); every summary number can be recomputed from the rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency.equivalence import AnswerClusterer
from coact_verl.evaluation.generate import SamplingSettings, generate_samples, resolve_backend
from coact_verl.evaluation.metrics import ProblemScore, score_samples, summarize
from coact_verl.evaluation.problems import EvalProblem, load_problems, task_of

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and where the results go (``limit``: first K problems; ``None`` = all)."""

    model: str
    dataset: str
    src: str
    out_dir: Path
    sampling: SamplingSettings = SamplingSettings()
    limit: int | None = None
    backend: str = "auto"
    verify_workers: int = 1
    progress: bool = True


def run_eval(settings: EvalSettings) -> dict[str, Any]:
    """Run the evaluation and write ``eval.json`` + ``eval.md`` under ``settings.out_dir``; returns the summary."""
    start = time.perf_counter()
    task = task_of(settings.dataset)
    problems = load_problems(settings.dataset, settings.src, settings.limit)
    backend = resolve_backend(settings.backend)
    samples = generate_samples(
        settings.model, [p.messages for p in problems], settings.sampling, backend, settings.progress
    )
    config = ConsistencyConfig(task=task, verify_workers=settings.verify_workers)
    with AnswerClusterer(config) as clusterer:
        scores = score_samples(samples, [p.gold for p in problems], task, clusterer)
    rows = [problem_row(p, r, s) for p, r, s in zip(problems, samples, scores, strict=True)]
    summary = {
        "dataset": settings.dataset,
        "task": task,
        "model": settings.model,
        "src": settings.src,
        "backend": backend,
        **{k: v for k, v in dataclasses.asdict(settings.sampling).items() if k != "batch_size"},
        **summarize(rows),
        "seconds": round(time.perf_counter() - start, 3),
    }
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / EVAL_JSON, json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    _write_atomic(out / EVAL_MD, markdown_summary(summary))
    return summary


def problem_row(problem: EvalProblem, responses: list[str], score: ProblemScore) -> dict[str, Any]:
    """The JSON row of one problem (see the module docstring)."""
    stats = score.stats
    return {
        "index": problem.index,
        "prompt_id": problem.prompt_id,
        "question": problem.question,
        "gold": problem.gold,
        "n": stats.n,
        "responses": list(responses),
        "answers": list(stats.answers),
        "cluster_of": list(stats.cluster_of),
        "cluster_sizes": list(stats.cluster_sizes),
        "cluster_answers": list(stats.cluster_answers),
        "majority": stats.majority_answer,
        "agreement": stats.agreement,
        "gold_cluster": score.gold_cluster,
        "correct": score.correct,
        "num_correct": score.num_correct,
        "majority_correct": score.majority_correct,
    }


def markdown_summary(summary: Mapping[str, Any]) -> str:
    """A small markdown table of the headline numbers (rates as percentages)."""
    n = summary["n"]
    header = f"| model | dataset | problems | n | pass@1 | maj@{n} | pass@{n} | no answer | mean agreement |"
    row = (
        f"| `{summary['model']}` | {summary['dataset']} | {summary['problems']} | {n} "
        f"| {_pct(summary['pass@1'])} | {_pct(summary['maj@n'])} | {_pct(summary['pass@n'])} "
        f"| {_pct(summary['no_answer_rate'])} | {summary['mean_agreement']:.3f} |"
    )
    return "\n".join(
        [
            f"# Evaluation: {summary['dataset']}",
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|",
            row,
            "",
            f"Correct samples: {summary['correct_samples']}/{summary['samples']}; "
            f"majority correct: {summary['majority_correct']}/{summary['problems']}.",
            "",
            f"Sampling: {summary['backend']} backend, temperature {summary['temperature']}, top-p {summary['top_p']}, "
            f"at most {summary['max_new_tokens']} new tokens, seed {summary['seed']}.",
            "",
            "pass@1: correct samples / n, averaged over problems. "
            f"maj@{n}: the largest cluster of equivalent answers matches the gold answer. "
            f"pass@{n}: at least one sample matches it.",
            "",
        ]
    )


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
