"""User feedback: annotator attentiveness from comparison votes, and simulated annotators."""

from coact_verl.feedback.attentiveness import (
    AttentivenessResult,
    Vote,
    estimate_attentiveness,
    estimate_attentiveness_from_counts,
    eta_standard_error,
    filter_votes,
    vote_weights,
    votes_needed,
)
from coact_verl.feedback.simulated import SimulatedAnnotatorPool, SimulatedUser, SimulatedVotes

__all__ = [
    "AttentivenessResult",
    "SimulatedAnnotatorPool",
    "SimulatedUser",
    "SimulatedVotes",
    "Vote",
    "estimate_attentiveness",
    "estimate_attentiveness_from_counts",
    "eta_standard_error",
    "filter_votes",
    "vote_weights",
    "votes_needed",
]
