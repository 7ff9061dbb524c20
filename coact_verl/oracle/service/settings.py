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
        db_threads: run SQLite calls in worker threads (``False``: on the event loop, which a lock held by another
            process then stalls).
        commit_batch: most queries that share one transaction (group commit; 1 commits each query on its own).
        lease_s: how long a human task stays with the annotator who fetched it, in seconds.
        two_phase: always charge and label in two transactions, checking answers in a worker thread (the default
            does both in one transaction whenever the answers are decided in-process, see ``GoldBackend``).
        fast_path: serve well-formed trainer queries through a lean ASGI path (see ``service/fast_path.py``).
        vote_mu: probability, in (0.5, 1], that the stronger model's response is the better one in a comparison
            vote; ``None`` estimates it from the votes (control votes make it identifiable).
        vote_min_eta: default η̂ threshold below which an annotator's votes yield no training pair.
        body_timeout_s: most seconds to receive a request body (408 after).
        head_timeout_s: most seconds to receive a request line and headers (408 and close after; either parser).
        max_header_bytes: most bytes of request headers (431 beyond).
        annotator_rps: sustained write requests per second per annotator and worker (429 beyond a 10 s burst).
        annotator_bytes_per_s: sustained request-body bytes per second per annotator and worker.
        page_max_bytes: most bytes of text in one page of labels or pairs (pages end early beyond it).
        verify_lanes: math-verify worker processes of the default equivalence; each query's answers go to the least
            busy one, so a query with slow answers holds up only its own lane.
        verify_timeout_s: hard timeout of one math-verify comparison, in seconds (a timeout counts as "not equal").
        max_candidates: most candidates per query (422 beyond) in runs that set no cap of their own; a trainer's
            handshake sets its run's cap to its samples per prompt (``actor_rollout_ref.rollout.n``), which must not
            exceed this. One query costs one label whatever its candidate count, so this bounds how many answers
            one label can test.
        docs: serve ``/docs`` and ``/redoc`` (they load scripts from a CDN on the annotation page's origin).
        human_task_ttl_s: a human-queue query still unanswered after this many seconds expires: its charge is
            refunded and it reads ``failed`` (its key may be sent again); ``None``: never.
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
    db_threads: bool = True
    commit_batch: int = 256
    lease_s: float = 600.0
    two_phase: bool = False
    fast_path: bool = True
    vote_mu: float | None = None
    vote_min_eta: float = 0.5
    body_timeout_s: float = 30.0
    head_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    annotator_rps: float = 20.0
    annotator_bytes_per_s: float = 512 * 1024
    page_max_bytes: int = 8 * 1024 * 1024
    verify_lanes: int = 2
    verify_timeout_s: float = 5.0
    max_candidates: int = 16
    docs: bool = False
    human_task_ttl_s: float | None = None

    def to_env(self) -> str:
        """JSON form, for passing to worker processes."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> OracleSettings:
        """Read the JSON form from ``$COACT_ORACLE_SETTINGS``."""
        return cls(**json.loads(os.environ[SETTINGS_ENV]))
