#!/usr/bin/env bash
# A standalone oracle service that trainers on any node reach by URL (coact.oracle.url=http://HOST:PORT).
set -euo pipefail

DB=${DB:-oracle.sqlite}
PORT=${PORT:-8765}
BACKEND=${BACKEND:-gold}
GOLD=${GOLD:-data/gsm8k/train_gold.parquet}

exec coact-verl oracle serve --db "$DB" --host "${HOST:-0.0.0.0}" --port "$PORT" --backend "$BACKEND" \
    --gold "$GOLD" ${BUDGET_TOTAL:+--budget-total "$BUDGET_TOTAL"} "$@"
