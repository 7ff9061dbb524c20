"""Write datasets as verl parquet for CoAct.

CoAct trains on *unlabelled* prompts. Each split becomes ``<split>.parquet`` in verl's schema
(``data_source``, chat ``prompt``, ``ability``, ``reward_model``, ``extra_info``). For the training split
the gold answer is **not** in that file: ``reward_model.ground_truth`` is empty and the gold answers go
to ``<split>_gold.parquet`` (``prompt_id``, ``answer``), which only the gold oracle and the metrics read.
Evaluation splits (``test``) keep ``ground_truth`` so that verl's validation can score them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from coact_verl.data.synthetic import arithmetic_problems
from coact_verl.records import PromptRow
from coact_verl.tasks import prompt_id

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

DATASETS = ("gsm8k", "math", "math500", "ocw", "arithmetic")


class SourceRow(TypedDict):
    """One problem of a source dataset: its question and its worked solution (the gold answer is in it)."""

    question: str
    solution: str


class GoldRow(TypedDict):
    """One row of ``<split>_gold.parquet``."""

    prompt_id: str
    answer: str
    data_source: str
    split: str


@dataclass(frozen=True)
class SourceSpec:
    """How one dataset maps onto the CoAct schema."""

    data_source: str
    task: str
    question_field: str
    answer_field: str
    hub_name: str
    hub_splits: tuple[str, ...]


SPECS = {
    "gsm8k": SourceSpec("openai/gsm8k", "gsm8k", "question", "answer", "openai/gsm8k", ("train", "test")),
    "math500": SourceSpec("HuggingFaceH4/MATH-500", "math", "problem", "answer", "HuggingFaceH4/MATH-500", ("test",)),
    # the MATH training split (7,500 problems, disjoint from MATH-500, which is drawn from MATH's test split)
    "math": SourceSpec(
        "DigitalLearningGmbH/MATH-lighteval",
        "math",
        "problem",
        "solution",
        "DigitalLearningGmbH/MATH-lighteval",
        ("train",),
    ),
    "ocw": SourceSpec("minerva_math", "numeric", "problem", "solution", "", ("test",)),
}


#: Accepted (question, solution) field pairs per task, tried in order: the hub layouts of MATH and MATH-500
#: (``problem`` with ``answer`` = the final answer, or ``solution`` = the worked solution ending in ``\\boxed{}``)
#: and the local layout (``question``, ``answer`` = the worked solution).
MATH_LAYOUTS = (("problem", "answer"), ("problem", "solution"), ("question", "answer"))
#: MATH-500, the evaluation set of ``--dataset math`` (its training split comes from the MATH training set).
MATH_EVAL = "math500"


def final_answer(solution: str, task: str) -> str:
    """The gold final answer of a reference solution (``#### n`` for GSM8K, last ``\\boxed{}`` otherwise)."""
    if task == "gsm8k":
        match = re.search(r"####\s*(.+?)\s*$", solution.strip())
        if not match:
            raise ValueError(f"GSM8K solution without '#### answer': {solution[-80:]!r}")
        return match.group(1).replace(",", "").strip()
    boxed = _last_boxed(solution)
    if boxed is not None:
        return boxed
    match = re.search(r"The answer is:?\s*(.+?)\s*$", solution.strip())
    if match:
        return match.group(1).strip()
    return solution.strip()


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_no}: invalid JSON ({error})") from error


def load_rows(dataset: str, src: str | None, split: str) -> list[SourceRow]:
    """Rows ``{question, solution}`` of one split from a local file/folder or a hub dataset name."""
    if dataset == "arithmetic":
        seed = {"train": 0, "test": 1}.get(split, 2)
        count = 512 if split == "train" else 64
        return [{"question": p.question, "solution": p.solution} for p in arithmetic_problems(count, seed=seed + 10)]
    spec = SPECS[dataset]
    if src is None:
        raise ValueError(f"--src is required for {dataset}")
    path = Path(src)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if path.exists():
        raw: Iterable[dict[str, Any]] = _read_jsonl(path)
    elif Path(src).exists():
        raise FileNotFoundError(f"{dataset}: no {split}.jsonl in {src}")
    else:  # a hub name, for users who are online
        from datasets import load_dataset  # type: ignore[import-untyped]  # datasets ships no py.typed

        name_args = ("main",) if dataset == "gsm8k" else ()
        raw = load_dataset(src or spec.hub_name, *name_args, split=split)
    layouts = MATH_LAYOUTS if spec.task == "math" else ((spec.question_field, spec.answer_field),)
    rows: list[SourceRow] = []
    for record in raw:
        fields = next((pair for pair in layouts if pair[0] in record and pair[1] in record), None)
        if fields is None:
            wanted = " or ".join(f"{q!r}/{a!r}" for q, a in layouts)
            raise ValueError(f"{dataset} record lacks {wanted}: {sorted(record)}")
        rows.append({"question": record[fields[0]], "solution": record[fields[1]]})
    return rows


def to_verl_rows(
    dataset: str, rows: list[SourceRow], split: str, labelled: bool
) -> tuple[list[dict[str, Any]], list[GoldRow]]:
    """(verl rows, gold rows). ``labelled`` keeps the gold in ``reward_model`` (evaluation splits only)."""
    spec = SPECS.get(dataset) or SourceSpec("coact/arithmetic", "gsm8k", "", "", "", ())
    verl_rows: list[dict[str, Any]] = []
    gold_rows: list[GoldRow] = []
    for index, row in enumerate(rows):
        answer = final_answer(row["solution"], spec.task)
        pid = prompt_id(spec.data_source, row["question"])
        prompt_row = PromptRow(
            prompt_id=pid,
            question=row["question"],
            task=spec.task,
            data_source=spec.data_source,
            split=split,
            index=index,
            ground_truth=answer if labelled else "",
        )
        verl_rows.append(prompt_row.to_row())
        gold_rows.append({"prompt_id": pid, "answer": answer, "data_source": spec.data_source, "split": split})
    return verl_rows, gold_rows


def prepare(
    dataset: str, src: str | None, out_dir: str | Path, max_train: int | None = None, eval_src: str | None = None
) -> dict[str, Path]:
    """Write ``train.parquet`` + ``train_gold.parquet`` and ``test.parquet``; return the written paths.

    ``math`` trains on the MATH training split (``src``) and evaluates on MATH-500 (``eval_src``, by default
    the hub's ``HuggingFaceH4/MATH-500``); both accept the hub layout (``problem``/``solution``/``answer``) and
    the local one (``question``/``answer``). Single-split sources (``math500``, ``ocw``) are cut 80/20.
    """
    import pandas as pd

    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_splits = SPECS[dataset].hub_splits if dataset in SPECS else ("train", "test")
    written: dict[str, Path] = {}
    for split in ("train", "test"):
        source, source_src = dataset, src
        if dataset == "math" and split == "test":
            source, source_src = MATH_EVAL, eval_src or SPECS[MATH_EVAL].hub_name
            rows = load_rows(source, source_src, "test")
        else:
            source_split = split if split in spec_splits else spec_splits[0]
            rows = load_rows(dataset, src, source_split)
            if source_split != split:  # single-split sources: a deterministic 80/20 cut
                cut = int(len(rows) * 0.8)
                rows = rows[:cut] if split == "train" else rows[cut:]
        if split == "train" and max_train:
            rows = rows[:max_train]
        verl_rows, gold_rows = to_verl_rows(source, rows, split, labelled=split == "test")
        written[split] = _write_parquet(pd.DataFrame(verl_rows), out / f"{split}.parquet")
        written[f"{split}_gold"] = _write_parquet(pd.DataFrame(gold_rows), out / f"{split}_gold.parquet")
    return written


def _write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically: a reader never sees a half-written file."""
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
