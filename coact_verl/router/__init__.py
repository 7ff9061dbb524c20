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
from coact_verl.router.embedding import Embedder, HashingEmbedder, MiniLMEmbedder, knn_distance, l2_normalise
from coact_verl.router.router import Router
from coact_verl.router.select import POLICIES, RoutingPolicy, get_policy, register_policy

__all__ = [
    "POLICIES",
    "Action",
    "Band",
    "Embedder",
    "GroupView",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "Reason",
    "Route",
    "Router",
    "RoutingPolicy",
    "band_of",
    "budget_for_step",
    "default_route",
    "get_policy",
    "knn_distance",
    "l2_normalise",
    "register_policy",
    "split_budget",
]
