"""Oracle backends, selected by name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from coact_verl.oracle.backends.base import (
    Backend,
    BackendError,
    Candidate,
    LabelQuery,
    LabelResult,
    accepted_answer,
)
from coact_verl.oracle.backends.gold import Equivalence, GoldBackend, exact_or_numeric
from coact_verl.oracle.backends.simulated import AnnotatorPool, SimulatedAnnotator, SimulatedBackend

if TYPE_CHECKING:
    from coact_verl.oracle.service.settings import OracleSettings

BACKEND_NAMES = ("gold", "simulated", "llm_judge", "human")

__all__ = [
    "BACKEND_NAMES",
    "AnnotatorPool",
    "Backend",
    "BackendError",
    "Candidate",
    "GoldBackend",
    "LabelQuery",
    "LabelResult",
    "SimulatedAnnotator",
    "SimulatedBackend",
    "accepted_answer",
    "exact_or_numeric",
    "make_backend",
    "resolve_equivalence",
]


def resolve_equivalence(spec: str) -> Equivalence | None:
    """``consistency`` → ``None`` (the backends' default), ``exact`` → :func:`exact_or_numeric`, else ``mod:attr``."""
    if spec == "consistency":
        return None
    if spec == "exact":
        return exact_or_numeric
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"equivalence must be 'consistency', 'exact' or 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def make_backend(settings: OracleSettings) -> Backend:
    """Build the backend named by ``settings.backend``."""
    equivalent = resolve_equivalence(settings.equivalence)
    offload = True if settings.two_phase else None
    verify = {"verify_lanes": settings.verify_lanes, "verify_timeout_s": settings.verify_timeout_s}
    if settings.backend == "gold":
        return GoldBackend(equivalent=equivalent, offload=offload, **verify)
    if settings.backend == "simulated":
        pool = AnnotatorPool(
            size=settings.sim_annotators,
            flip_rate=settings.sim_flip_rate,
            flip_spread=settings.sim_flip_spread,
            position_bias=settings.sim_position_bias,
            seed=settings.seed,
        )
        return SimulatedBackend(pool=pool, equivalent=equivalent, offload=offload, **verify)
    if settings.backend == "human":
        from coact_verl.oracle.backends.human import HumanBackend

        return HumanBackend(equivalent=equivalent)
    if settings.backend == "llm_judge":
        from coact_verl.oracle.backends.llm_judge import LLMJudgeBackend

        return LLMJudgeBackend.from_settings(settings)
    raise ValueError(f"unknown oracle backend {settings.backend!r}; known: {BACKEND_NAMES}")
