#!/usr/bin/env bash
# A standalone oracle service that trainers on any node reach by URL (coact.oracle.url=http://HOST:PORT).
# The trainer token comes from COACT_ORACLE_TRAINER_TOKEN, which the trainer needs too (there is no default token).
set -euo pipefail

: "${COACT_ORACLE_TRAINER_TOKEN:?set COACT_ORACLE_TRAINER_TOKEN (the trainer reads the same variable)}"
export COACT_ORACLE_TRAINER_TOKEN
DB=${DB:-oracle.sqlite}  # one database per run: a fresh run uses a new file, a resumed run its own
PORT=${PORT:-8765}
BACKEND=${BACKEND:-gold}
GOLD=${GOLD:-data/gsm8k/train_gold.parquet}

exec coact-verl oracle serve --db "$DB" --host "${HOST:-0.0.0.0}" --port "$PORT" --backend "$BACKEND" \
    --gold "$GOLD" ${BUDGET_TOTAL:+--budget-total "$BUDGET_TOTAL"} "$@"
