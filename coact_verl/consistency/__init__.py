"""The CoAct group signal: final-answer extraction, equivalence clustering and per-prompt agreement.

Typical use::

    from coact_verl.config import ConsistencyConfig
    from coact_verl.consistency import AnswerClusterer, label_cluster, rewards_for_cluster, score_groups

    with AnswerClusterer(ConsistencyConfig(task="math")) as clusterer:
        stats = score_groups(responses_per_prompt, "math", clusterer)   # one GroupStats per prompt
        majority_rewards = [rewards_for_cluster(s, 0) for s in stats]
        oracle_cluster = label_cluster(stats[0], oracle_answer, clusterer)

Offline scoring of saved rollouts lives in :mod:`coact_verl.consistency.offline` (``score_rollouts`` and the
``score`` subcommand).
"""

from coact_verl.consistency.canonical import Canonical, canonicalize, normalize_latex, numbers_equal
from coact_verl.consistency.equivalence import AnswerClusterer
from coact_verl.consistency.extract import extract_answer, last_boxed, scientific_number
from coact_verl.consistency.groups import (
    GroupStats,
    alabel_clusters,
    ascore_groups,
    compute_group_stats,
    extract_answers,
    label_cluster,
    label_clusters,
    rewards_for_cluster,
    score_groups,
    stats_from_clusters,
)
from coact_verl.consistency.pool import HardTimeoutPool, Outcome

__all__ = [
    "AnswerClusterer",
    "Canonical",
    "GroupStats",
    "HardTimeoutPool",
    "Outcome",
    "alabel_clusters",
    "ascore_groups",
    "canonicalize",
    "compute_group_stats",
    "extract_answer",
    "extract_answers",
    "label_cluster",
    "label_clusters",
    "last_boxed",
    "normalize_latex",
    "numbers_equal",
    "rewards_for_cluster",
    "score_groups",
    "scientific_number",
    "stats_from_clusters",
]
