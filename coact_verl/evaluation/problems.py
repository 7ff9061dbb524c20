"""Evaluation problems: the chat prompt exactly as ``prepare`` writes it, plus the gold final answer.

Two inputs are accepted:

* the raw source that ``prepare`` reads (a local ``.jsonl`` file, a folder holding ``test.jsonl``, or a hub
  dataset name): its whole ``test`` split is evaluated;
* a parquet file written by ``prepare`` (e.g. ``test.parquet``): gold answers come from
  ``reward_model.ground_truth`` or, where that is empty, from ``<stem>_gold.parquet`` next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coact_verl.data.prepare import SPECS, load_rows, to_verl_rows

EVAL_DATASETS = ("gsm8k", "math500", "ocw")


@dataclass(frozen=True)
class EvalProblem:
    """One problem to sample.

    Attributes:
        index: position in the input, from 0.
        prompt_id: ``prepare``'s stable id (16 hex chars).
        question: the question text without the instruction suffix.
        messages: the chat prompt, ``[{"role", "content"}]``, as in the training parquet.
        gold: the reference final answer.
    """

    index: int
    prompt_id: str
    question: str
    messages: tuple[Mapping[str, str], ...]
    gold: str


def task_of(dataset: str) -> str:
    """Answer format (``gsm8k``, ``math`` or ``numeric``) of a dataset name."""
    if dataset not in EVAL_DATASETS:
        raise ValueError(f"--dataset must be one of {EVAL_DATASETS}, got {dataset!r}")
    return SPECS[dataset].task


def load_problems(dataset: str, src: str, limit: int | None = None) -> list[EvalProblem]:
    """Problems of ``src`` (raw source or prepared parquet), the first ``limit`` of them when given."""
    task_of(dataset)
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if str(src).endswith(".parquet"):
        problems = _from_parquet(Path(src))
    else:
        verl_rows, gold_rows = to_verl_rows(dataset, load_rows(dataset, src, "test"), "test", labelled=True)
        pairs = enumerate(zip(verl_rows, gold_rows, strict=True))
        problems = [_problem(i, row, gold["answer"]) for i, (row, gold) in pairs]
    if not problems:
        raise ValueError(f"no problems in {src}")
    return problems[:limit] if limit else problems


def _from_parquet(path: Path) -> list[EvalProblem]:
    import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

    if not path.is_file():
        raise FileNotFoundError(f"parquet not found: {path}")
    rows = pd.read_parquet(path).to_dict("records")
    gold_path = path.with_name(f"{path.stem}_gold.parquet")
    gold_by_id: dict[str, str] = {}
    if gold_path.is_file():
        gold_frame = pd.read_parquet(gold_path)
        gold_by_id = dict(zip(gold_frame["prompt_id"].astype(str), gold_frame["answer"].astype(str), strict=True))
    problems = []
    for index, row in enumerate(rows):
        pid = str(row["extra_info"]["prompt_id"])
        gold = str((row.get("reward_model") or {}).get("ground_truth") or gold_by_id.get(pid, ""))
        if not gold:
            raise ValueError(f"{path}: row {index} has no gold answer (not in reward_model nor in {gold_path.name})")
        problems.append(_problem(index, row, gold))
    return problems


def _problem(index: int, row: Mapping[str, Any], gold: str) -> EvalProblem:
    messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"])
    extra = row["extra_info"]
    return EvalProblem(index, str(extra["prompt_id"]), str(extra["question"]), messages, str(gold))
