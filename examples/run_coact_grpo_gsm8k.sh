#!/usr/bin/env bash
# CoAct GRPO on GSM8K on one GPU node (vLLM rollout, FSDP2), with the gold oracle at a 20% per-step share.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
DATA=${DATA:-data/gsm8k}
GPUS=${GPUS:-8}
N=${N:-8}
STEPS=${STEPS:-200}

[ -f "$DATA/train.parquet" ] || coact-verl prepare --dataset gsm8k --src "${GSM8K_SRC:-openai/gsm8k}" --out "$DATA"

python3 -m verl.trainer.main_ppo --config-path "$(coact-verl config-dir)" --config-name coact_grpo \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
    data.train_batch_size=128 data.max_prompt_length=512 data.max_response_length=1024 \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.rollout.n="$N" actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    trainer.n_gpus_per_node="$GPUS" trainer.nnodes=1 trainer.total_training_steps="$STEPS" \
    trainer.test_freq=20 trainer.save_freq=50 \
    coact.oracle.gold_path="$DATA/train_gold.parquet" coact.router.oracle_share_per_step=0.2 "$@"
