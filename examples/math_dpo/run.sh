#!/usr/bin/env bash
# CoAct DPO on MATH (MATH-500 split by `coact-verl prepare`); settings in math_dpo.yaml, overrides as args.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-data/math500}

[ -f "$DATA/train.parquet" ] || coact-verl prepare --dataset math500 --src "${MATH_SRC:-HuggingFaceH4/MATH-500}" --out "$DATA"

python3 -m verl.trainer.main_ppo --config-path "$here" --config-name math_dpo \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
    coact.oracle.gold_path="$DATA/train_gold.parquet" "$@"
