"""Oracle backends, selected by name from a registry (:data:`BACKENDS`, :func:`register_backend`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "AnnotatorPool",
    "Backend",
    "BackendError",
    "BackendFactory",
    "Candidate",
    "GoldBackend",
    "LabelQuery",
    "LabelResult",
    "SimulatedAnnotator",
    "SimulatedBackend",
    "accepted_answer",
    "exact_or_numeric",
    "get_backend_factory",
    "make_backend",
    "register_backend",
    "resolve_equivalence",
]

#: Builds a backend from the service's settings.
BackendFactory = Callable[["OracleSettings"], Backend]
#: Backend factories by name (``oracle serve --backend NAME``); :func:`register_backend` adds one.
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Function decorator: register a backend factory under ``name`` (a duplicate name is an error)."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        if name in BACKENDS:
            raise ValueError(f"oracle backend {name!r} is already registered")
        BACKENDS[name] = factory
        return factory

    return wrap


def get_backend_factory(name: str) -> BackendFactory:
    """The factory registered as ``name``."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown oracle backend {name!r}; known: {sorted(BACKENDS)}") from None


def make_backend(settings: OracleSettings) -> Backend:
    """Build the backend named by ``settings.backend``."""
    return get_backend_factory(settings.backend)(settings)


def resolve_equivalence(spec: str) -> Equivalence | None:
    """``consistency`` → ``None`` (the backends' default), ``exact`` → :func:`exact_or_numeric`, else ``mod:attr``."""
    if spec == "consistency":
        return None
    if spec == "exact":
        return exact_or_numeric
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"equivalence must be 'consistency', 'exact' or 'module:function', got {spec!r}")
    equivalence: Equivalence = getattr(importlib.import_module(module), attr)
    return equivalence


def _verify(settings: OracleSettings) -> dict[str, Any]:
    """Answer-checking options shared by the backends that compare answers with gold in-process."""
    offload = True if settings.two_phase else None
    return {
        "equivalent": resolve_equivalence(settings.equivalence),
        "offload": offload,
        "verify_lanes": settings.verify_lanes,
        "verify_timeout_s": settings.verify_timeout_s,
    }


@register_backend("gold")
def _gold(settings: OracleSettings) -> Backend:
    return GoldBackend(**_verify(settings))


@register_backend("simulated")
def _simulated(settings: OracleSettings) -> Backend:
    pool = AnnotatorPool(
        size=settings.sim_annotators,
        flip_rate=settings.sim_flip_rate,
        flip_spread=settings.sim_flip_spread,
        position_bias=settings.sim_position_bias,
        seed=settings.seed,
    )
    return SimulatedBackend(pool=pool, **_verify(settings))


@register_backend("llm_judge")
def _llm_judge(settings: OracleSettings) -> Backend:
    from coact_verl.oracle.backends.llm_judge import LLMJudgeBackend

    return LLMJudgeBackend.from_settings(settings)


@register_backend("human")
def _human(settings: OracleSettings) -> Backend:
    from coact_verl.oracle.backends.human import HumanBackend

    return HumanBackend(equivalent=resolve_equivalence(settings.equivalence))


#: The built-in backends' names, in registration order.
BACKEND_NAMES = tuple(BACKENDS)
