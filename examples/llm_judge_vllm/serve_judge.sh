#!/usr/bin/env bash
# An LLM-judge oracle: a vLLM server with an instruct model, and the oracle service asking it for verdicts.
# Trainers then use coact.oracle.url=http://HOST:8765 (see llm_judge_grpo.yaml), with the same
# COACT_ORACLE_TRAINER_TOKEN in their environment.
set -euo pipefail

# The trainer token: the trainer reads the same variable (there is no default token).
: "${COACT_ORACLE_TRAINER_TOKEN:?set COACT_ORACLE_TRAINER_TOKEN (the trainer reads the same variable)}"
export COACT_ORACLE_TRAINER_TOKEN

JUDGE=${JUDGE:-Qwen/Qwen2.5-7B-Instruct}
JUDGE_PORT=${JUDGE_PORT:-8000}
PORT=${PORT:-8765}

vllm serve "$JUDGE" --port "$JUDGE_PORT" --max-model-len 8192 --gpu-memory-utilization 0.9 &
until curl -sf "http://127.0.0.1:$JUDGE_PORT/v1/models" > /dev/null; do sleep 5; done

# --judge-without-gold: the judge sees only the question and the candidates (no hidden answer exists)
exec coact-verl oracle serve --db "${DB:-judge_oracle.sqlite}" --host 0.0.0.0 --port "$PORT" \
    --backend llm_judge --judge-url "http://127.0.0.1:$JUDGE_PORT/v1" --judge-model "$JUDGE" \
    --judge-without-gold --judge-max-tokens 512 ${BUDGET_TOTAL:+--budget-total "$BUDGET_TOTAL"} "$@"
