#!/usr/bin/env bash
# CoAct DPO on MATH: trains on the MATH training split (7,500 problems) and evaluates on MATH-500, which is drawn
# from MATH's test split. Settings in math_dpo.yaml, overrides as args.
# MATH_SRC / MATH500_SRC: a hub dataset name (problem/solution[/answer]) or a local jsonl file or folder
# (question/answer also accepted).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-data/math}

[ -f "$DATA/train.parquet" ] || coact-verl prepare --dataset math --out "$DATA" \
    --src "${MATH_SRC:-DigitalLearningGmbH/MATH-lighteval}" --eval-src "${MATH500_SRC:-HuggingFaceH4/MATH-500}"

python3 -m verl.trainer.main_ppo --config-path "$here" --config-name math_dpo \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
    coact.oracle.gold_path="$DATA/train_gold.parquet" "$@"
