"""Oracle labels for CoAct: an HTTP service (gold, simulated, LLM-judge or human backends) and its client.

Start a service (SQLite in WAL mode; tokens may also come from ``$COACT_ORACLE_ADMIN_TOKEN`` and
``$COACT_ORACLE_TRAINER_TOKEN``)::

    python -m coact_verl.oracle serve --db oracle.sqlite --port 8765 --backend gold \
        --gold gold.parquet --budget-total 3000 --admin-token ADMIN --trainer-token TRAINER

Ask it for labels from training code (never raises for service trouble; waits at most ``max_wait_s``)::

    client = OracleClient("http://127.0.0.1:8765", "TRAINER", request_timeout_s=2, max_wait_s=5, retries=2)
    result = await client.query(key=make_key(pid, step, responses), prompt_id=pid, prompt=question,
                                task="gsm8k", step=step, candidates=[{"answer": "42", "response": "...", "votes": 5}])
    if result.labeled: ...  # result.label.correct, one verdict per candidate

Each training run has its own namespace in a service (budget, step, keys, labels):
:func:`~coact_verl.oracle.client.handshake` opens it by name (fresh or resumed) and returns its id, which every
client of the run sends (``OracleClient(..., run_id=...)``, the ``X-CoAct-Run`` header); callers that name no run
share the default run.

With ``coact.oracle.url`` unset, :func:`start_from_config` starts a service next to the trainer. The API is
described at ``/openapi.json``; annotators work at ``/annotate`` (``human`` backend).
"""

from coact_verl.oracle.client import (
    ClientStats,
    OracleClient,
    OracleLabel,
    OracleResult,
    SyncOracleClient,
    make_key,
)
from coact_verl.oracle.local import start_from_config, start_local_service, stop_local_service

__all__ = [
    "ClientStats",
    "OracleClient",
    "OracleLabel",
    "OracleResult",
    "SyncOracleClient",
    "make_key",
    "start_from_config",
    "start_local_service",
    "stop_local_service",
]
