#!/usr/bin/env bash
# A standalone oracle service that trainers on any node reach by URL (coact.oracle.url=http://HOST:PORT).
# The trainer token comes from COACT_ORACLE_TRAINER_TOKEN, which the trainer needs too (there is no default token).
set -euo pipefail

: "${COACT_ORACLE_TRAINER_TOKEN:?set COACT_ORACLE_TRAINER_TOKEN (the trainer reads the same variable)}"
export COACT_ORACLE_TRAINER_TOKEN
# One database serves any number of runs: each trainer opens its own run in it, named by
# trainer.project_name/trainer.experiment_name (a fresh run starts over, a resumed one continues its own).
DB=${DB:-oracle.sqlite}
PORT=${PORT:-8765}
BACKEND=${BACKEND:-gold}
GOLD=${GOLD:-data/gsm8k/train_gold.parquet}

exec coact-verl oracle serve --db "$DB" --host "${HOST:-0.0.0.0}" --port "$PORT" --backend "$BACKEND" \
    --gold "$GOLD" ${BUDGET_TOTAL:+--budget-total "$BUDGET_TOTAL"} "$@"
