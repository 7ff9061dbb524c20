"""Service settings, shared by the CLI, the app factory and locally started services."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

SETTINGS_ENV = "COACT_ORACLE_SETTINGS"


@dataclass
class OracleSettings:
    """Everything a service process needs.

    Args:
        db_path: SQLite file (created if missing).
        backend: ``gold``, ``simulated``, ``llm_judge`` or ``human``.
        gold_path: parquet/jsonl with ``prompt_id`` and ``answer`` loaded (upserted) at start.
        budget_total: total label budget set at start; ``None`` keeps the stored one (unbounded on a new DB).
        budget_per_step: per-step budget set at start together with ``budget_total``.
        admin_token: bearer token of the admin role; ``None`` disables admin endpoints.
        trainer_token: bearer token of the trainer role; ``None`` disables trainer endpoints.
        equivalence: answer equivalence: ``consistency`` (coact_verl.consistency), ``exact`` (strings/numbers)
            or ``module:function`` taking ``(answer, reference) -> bool``.
        seed: seed of the simulated annotator pool.
        sim_annotators: simulated pool size.
        sim_flip_rate: mean label-flip probability of simulated annotators.
        sim_flip_spread: spread of per-annotator flip rates.
        sim_position_bias: mean probability of marking the first candidate correct regardless of truth.
        judge_url: base URL of an OpenAI-compatible endpoint (``.../v1``) for ``llm_judge``.
        judge_model: model name sent to the judge.
        judge_api_key_env: environment variable holding the judge API key (never stored in settings).
        judge_timeout_s: timeout of one judge request, in seconds.
        judge_retries: retries of a failed judge request.
        judge_with_gold: give the judge the gold answer when one is stored (CoAct's oracle is a gold verifier).
        judge_max_tokens: completion length bound of one judge request, in tokens.
        db_synchronous: SQLite ``synchronous`` pragma (``NORMAL`` survives process kills; ``FULL`` power loss too).
        db_threads: run SQLite calls in worker threads instead of on the event loop.
        commit_batch: most queries that share one transaction (group commit; 1 commits each query on its own).
        lease_s: how long a human task stays with the annotator who fetched it, in seconds.
        two_phase: always charge and label in two transactions, checking answers in a worker thread (the default
            does both in one transaction whenever the answers are decided in-process, see ``GoldBackend``).
        fast_path: serve well-formed trainer queries through a lean ASGI path (see ``service/fast_path.py``).
        vote_mu: probability, in (0.5, 1], that the stronger model's response is the better one in a comparison
            vote; ``None`` estimates it from the votes (control votes make it identifiable).
        vote_min_eta: default η̂ threshold below which an annotator's votes yield no training pair.
    """

    db_path: str = "oracle.sqlite"
    backend: str = "gold"
    gold_path: str | None = None
    budget_total: int | None = None
    budget_per_step: int | None = None
    admin_token: str | None = None
    trainer_token: str | None = None
    equivalence: str = "consistency"
    seed: int = 0
    sim_annotators: int = 13
    sim_flip_rate: float = 0.25
    sim_flip_spread: float = 0.0
    sim_position_bias: float = 0.0
    judge_url: str | None = None
    judge_model: str = "gpt-4o-mini"
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_timeout_s: float = 60.0
    judge_retries: int = 3
    judge_with_gold: bool = True
    judge_max_tokens: int = 1024
    db_synchronous: str = "NORMAL"
    db_threads: bool = False
    commit_batch: int = 256
    lease_s: float = 600.0
    two_phase: bool = False
    fast_path: bool = True
    vote_mu: float | None = None
    vote_min_eta: float = 0.5

    def to_env(self) -> str:
        """JSON form, for passing to worker processes."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> OracleSettings:
        """Read the JSON form from ``$COACT_ORACLE_SETTINGS``."""
        return cls(**json.loads(os.environ[SETTINGS_ENV]))
