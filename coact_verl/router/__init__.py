"""Group routing: self-label, ask the oracle (within budget), or drop."""

from coact_verl.router.bands import (
    Action,
    Band,
    GroupView,
    Reason,
    Route,
    band_of,
    budget_for_step,
    default_route,
    split_budget,
)
from coact_verl.router.embedding import (
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    knn_distance,
    l2_normalise,
    make_embedder,
)
from coact_verl.router.learning import Audit, BranchYield, Calibration, wilson_interval
from coact_verl.router.router import Router
from coact_verl.router.select import POLICIES, RoutingPolicy, get_policy, register_policy
from coact_verl.router.service import LocalRouter, RouterClient, RouterService

__all__ = [
    "POLICIES",
    "Action",
    "Audit",
    "Band",
    "BranchYield",
    "Calibration",
    "Embedder",
    "GroupView",
    "HashingEmbedder",
    "LocalRouter",
    "MiniLMEmbedder",
    "Reason",
    "Route",
    "Router",
    "RouterClient",
    "RouterService",
    "RoutingPolicy",
    "band_of",
    "budget_for_step",
    "default_route",
    "get_policy",
    "knn_distance",
    "l2_normalise",
    "make_embedder",
    "register_policy",
    "split_budget",
    "wilson_interval",
]
