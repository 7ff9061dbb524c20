"""``coact-verl prepare`` for examples/math_dpo: the hub layout of MATH / MATH-500 (``problem``/``solution``/
``answer``) as well as the local one (``question``/``answer``); ``--dataset math`` trains on the MATH training
split and evaluates on MATH-500."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from coact_verl.data.prepare import final_answer, prepare

REPO = Path(__file__).resolve().parents[2]


def _local_rows(shared_data) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").open()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _hub_math500(rows: list[dict]) -> list[dict]:
    """HuggingFaceH4/MATH-500's layout: problem, solution, answer (the final answer), subject, level, unique_id."""
    return [
        {"problem": r["question"], "solution": r["answer"], "answer": final_answer(r["answer"], "math"),
         "subject": "Algebra", "level": 3, "unique_id": f"test/{i}.json"}
        for i, r in enumerate(rows)
    ]  # fmt: skip


def _hub_math_train(rows: list[dict]) -> list[dict]:
    """The MATH training split on the hub (e.g. DigitalLearningGmbH/MATH-lighteval): problem, level, solution, type."""
    return [{"problem": f"Train: {r['question']}", "level": "Level 2", "solution": r["answer"], "type": "Algebra"}
            for r in rows]  # fmt: skip


def test_math500_reads_the_hub_layout_like_the_local_one(shared_data, tmp_path):
    rows = _local_rows(shared_data)[:60]
    local = prepare("math500", str(_write(tmp_path / "local.jsonl", rows)), tmp_path / "local")
    hub = prepare("math500", str(_write(tmp_path / "hub.jsonl", _hub_math500(rows))), tmp_path / "hub")
    for split in ("train_gold", "test"):
        a, b = pd.read_parquet(local[split]), pd.read_parquet(hub[split])
        assert len(a) == len(b) > 0
        assert a.astype(str).equals(b.astype(str)), split  # same prompts, ids and answers


def test_math_trains_on_the_math_train_split_and_evaluates_on_math500(shared_data, tmp_path):
    rows = _local_rows(shared_data)
    train_src = _write(tmp_path / "math_train.jsonl", _hub_math_train(rows[100:300]))
    eval_src = _write(tmp_path / "math500.jsonl", _hub_math500(rows))
    paths = prepare("math", str(train_src), tmp_path / "out", eval_src=str(eval_src))
    train, gold, test = (pd.read_parquet(paths[k]) for k in ("train", "train_gold", "test"))
    assert len(train) == len(gold) == 200 and len(test) == 500  # all of MATH-500, none of it in training
    assert all(e["question"].startswith("Train: ") for e in train["extra_info"])
    assert not {e["question"] for e in train["extra_info"]} & {e["question"] for e in test["extra_info"]}
    assert set(test["data_source"]) == {"HuggingFaceH4/MATH-500"}
    assert all(rm["ground_truth"] == "" for rm in train["reward_model"])
    assert list(test["reward_model"].map(lambda rm: rm["ground_truth"])) == [
        final_answer(r["answer"], "math") for r in rows
    ]
    assert gold["answer"].tolist() == [final_answer(r["answer"], "math") for r in rows[100:300]]
    # the local layout works as the second input
    local = prepare("math", str(_write(tmp_path / "t.jsonl", rows[:10])), tmp_path / "o2", eval_src=str(eval_src))
    assert len(pd.read_parquet(local["train"])) == 10


def test_a_record_in_neither_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'problem'/'answer' or 'problem'/'solution' or 'question'/'answer'"):
        prepare("math500", str(_write(tmp_path / "x.jsonl", [{"prompt": "1+1", "target": "2"}])), tmp_path / "o")


def test_the_example_prepares_what_its_config_reads(shared_data, tmp_path):
    """examples/math_dpo/run.sh's prepare command (with local sources) writes the files math_dpo.yaml names."""
    run_sh = (REPO / "examples" / "math_dpo" / "run.sh").read_text()
    command = re.search(r"coact-verl prepare (.+?)\n\n", run_sh, re.S)[1].replace("\\\n", " ")
    assert "--dataset math " in command and "MATH-500" in command
    rows = _local_rows(shared_data)
    sources = {
        "MATH_SRC": str(_write(tmp_path / "train.jsonl", _hub_math_train(rows[:20]))),
        "MATH500_SRC": str(_write(tmp_path / "m500.jsonl", _hub_math500(rows[:30]))),
        "DATA": str(tmp_path / "data"),
    }
    args = [re.sub(r'"?\$\{?(\w+)(:-[^}]*)?\}?"?', lambda m: sources[m[1]], a) for a in command.split()]
    done = subprocess.run([sys.executable, "-m", "coact_verl.cli", "prepare", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = (REPO / "examples" / "math_dpo" / "math_dpo.yaml").read_text()
    for name in ("train.parquet", "test.parquet", "train_gold.parquet"):
        assert (tmp_path / "data" / name).exists()
    data_dir = re.search(r"DATA=\$\{DATA:-(\S+)\}", run_sh)[1]
    for key in ("train_files", "val_files", "gold_path"):
        assert re.search(rf"{key}: {re.escape(data_dir)}/", config), key
    assert len(pd.read_parquet(tmp_path / "data" / "test.parquet")) == 30
