#!/usr/bin/env bash
# CoAct GRPO on GSM8K on one GPU node (vLLM rollout, FSDP2); settings in gsm8k_grpo_vllm.yaml, overrides as args.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-data/gsm8k}

[ -f "$DATA/train.parquet" ] || coact-verl prepare --dataset gsm8k --src "${GSM8K_SRC:-openai/gsm8k}" --out "$DATA"

python3 -m verl.trainer.main_ppo --config-path "$here" --config-name gsm8k_grpo_vllm \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
    coact.oracle.gold_path="$DATA/train_gold.parquet" "$@"
