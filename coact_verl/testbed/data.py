"""Testbed problems as verl parquet in CoAct's layout (unlabelled training prompts, gold answers set aside).

Rows are :class:`coact_verl.records.PromptRow` rows (the prepared datasets' layout) whose ``data_source``
is ``testbed/<kind>``, so that verl's validation reports accuracy per kind (``val-core/testbed/<kind>/...``).
Validation problems are held out: no validation question occurs in the training split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coact_verl.records import PromptRow
from coact_verl.tasks import prompt_id
from coact_verl.testbed.tasks import TestbedConfig, TestbedProblem, sample_problems

TRAIN_SEED, TEST_SEED = 101, 202


def verl_rows(
    problems: list[TestbedProblem], split: str, labelled: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(verl rows, gold rows); ``labelled`` keeps the gold in ``reward_model`` (the validation split)."""
    rows: list[dict[str, Any]] = []
    gold: list[dict[str, str]] = []
    for index, problem in enumerate(problems):
        pid = prompt_id(problem.data_source, problem.question)
        row = PromptRow(
            prompt_id=pid,
            question=problem.question,
            task="gsm8k",
            data_source=problem.data_source,
            split=split,
            index=index,
            ground_truth=problem.answer if labelled else "",
        )
        rows.append(row.to_row())
        gold.append({"prompt_id": pid, "answer": problem.answer, "data_source": problem.data_source, "split": split})
    return rows, gold


def write_testbed_data(
    out_dir: str | Path, cfg: TestbedConfig | None = None, train_count: int = 2048, test_count: int = 240
) -> dict[str, Path]:
    """Write ``train.parquet``/``train_gold.parquet`` and ``test.parquet``/``test_gold.parquet``; return the paths."""
    import pandas as pd  # type: ignore[import-untyped]

    cfg = cfg or TestbedConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test = sample_problems(test_count, cfg, seed=TEST_SEED)
    train = sample_problems(train_count, cfg, seed=TRAIN_SEED, exclude=frozenset(p.question for p in test))
    written = {}
    for split, problems in (("train", train), ("test", test)):
        rows, gold = verl_rows(problems, split, labelled=split == "test")
        for name, frame in ((split, rows), (f"{split}_gold", gold)):
            path = out / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            pd.DataFrame(frame).to_parquet(tmp, index=False)
            tmp.replace(path)
            written[name] = path
    return written
