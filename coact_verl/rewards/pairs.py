"""Preference pairs (chosen ≻ rejected) from labelled groups, user edits and user votes.

Group pairs follow CoAct's construction, made deterministic:

* **chosen** = the *last* response (highest index, i.e. the last sample drawn) in the label's cluster. When
  per-response oracle correctness is given, responses marked incorrect are skipped.
* **rejected** = the *shortest* response (ties: lowest index) among the *least-voted* clusters other than the
  label's. Cluster sizes are counted over the whole group. When correctness is given, responses marked
  correct are never rejected (they may be equivalent answers that clustering failed to merge).
* Responses without an extracted answer (cluster id ``None`` or a negative int) form **one** extra cluster
  whose size is their count. It can never be the label, but its members are valid rejections: a response
  that fails to state an answer is worse than one that states the right answer.
* No pair when there is no label, the label cluster is empty, or no response lies outside it (unanimous).

A :class:`Pair` refers to responses by index into the group (``int``) or carries literal texts (``str``) for
pairs whose responses are not rollouts of the group (user edits, oracle corrections).
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

PairSource = Literal["self", "oracle", "vote", "edit"]
PAIR_SOURCES: tuple[str, ...] = ("self", "oracle", "vote", "edit")


class _NoAnswer:
    """Sentinel cluster key shared by all responses without an answer."""

    def __repr__(self) -> str:
        return "NO_ANSWER"


NO_ANSWER = _NoAnswer()


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` ≻ ``rejected`` for prompt ``prompt_id``.

    Args:
        prompt_id: the prompt both responses answer.
        chosen: index of the preferred response in its group, or its text.
        rejected: index of the dispreferred response in its group, or its text.
        source: ``"self"`` (majority label), ``"oracle"`` (oracle label), ``"vote"`` (a user's comparison) or
            ``"edit"`` (a user's or the oracle's corrected response ≻ the model's).
        weight: non-negative loss weight (e.g. an annotator's attentiveness).
    """

    prompt_id: str
    chosen: int | str
    rejected: int | str
    source: PairSource
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in PAIR_SOURCES:
            raise ValueError(f"source must be one of {PAIR_SOURCES}, got {self.source!r}")
        if not (self.weight >= 0.0 and math.isfinite(self.weight)):
            raise ValueError(f"weight must be finite and >= 0, got {self.weight}")
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected must differ")


def _cluster_key(cluster_id: Hashable | None) -> Hashable:
    if cluster_id is None or (isinstance(cluster_id, numbers.Integral) and cluster_id < 0):
        return NO_ANSWER
    return cluster_id


def select_pair(
    cluster_ids: Sequence[Hashable | None],
    label_cluster: Hashable | None,
    lengths: Sequence[int],
    correct: Sequence[bool | None] | None = None,
) -> tuple[int, int] | None:
    """Pick (chosen, rejected) response indices of one group (rules in the module docstring).

    Args:
        cluster_ids: answer cluster of each response, length n; ``None`` or a negative int = no answer.
        label_cluster: the cluster holding the label (majority or oracle answer); ``None`` = no label.
        lengths: length of each response (tokens or characters), length n; decides among rejections.
        correct: optional oracle correctness per response (``None`` entries = unchecked), length n.

    Returns:
        ``(chosen, rejected)`` indices, or ``None`` when the group yields no pair.
    """
    n = len(cluster_ids)
    if len(lengths) != n or (correct is not None and len(correct) != n):
        raise ValueError("cluster_ids, lengths and correct must have the same length")
    label = _cluster_key(label_cluster)
    if label is NO_ANSWER:
        return None
    keys = [_cluster_key(c) for c in cluster_ids]
    winners = [i for i in range(n) if keys[i] == label and (correct is None or correct[i] is not False)]
    losers = [i for i in range(n) if keys[i] != label and (correct is None or correct[i] is not True)]
    if not winners or not losers:
        return None
    sizes = Counter(keys)
    fewest = min(sizes[keys[i]] for i in losers)
    rejected = min((i for i in losers if sizes[keys[i]] == fewest), key=lambda i: (lengths[i], i))
    return winners[-1], rejected


def make_pair(
    prompt_id: str,
    cluster_ids: Sequence[Hashable | None],
    label_cluster: Hashable | None,
    lengths: Sequence[int],
    correct: Sequence[bool | None] | None = None,
    source: PairSource = "self",
    weight: float = 1.0,
) -> Pair | None:
    """:func:`select_pair` wrapped into a :class:`Pair` (``None`` when the group yields no pair)."""
    picked = select_pair(cluster_ids, label_cluster, lengths, correct)
    if picked is None:
        return None
    return Pair(prompt_id, picked[0], picked[1], source, weight)


def edit_pair(prompt_id: str, original: str, edited: str, weight: float = 1.0) -> Pair | None:
    """A user's (or the oracle's) edit as a pair, edited ≻ original (coactive feedback).

    Returns ``None`` when the edit is empty or equals the original up to surrounding whitespace.
    """
    if not edited.strip() or edited.strip() == original.strip():
        return None
    return Pair(prompt_id, edited, original, "edit", weight)


def vote_pair(
    prompt_id: str, response_a: int | str, response_b: int | str, picked_a: bool, weight: float = 1.0
) -> Pair:
    """A user's comparison vote as a pair: the picked response ≻ the other."""
    chosen, rejected = (response_a, response_b) if picked_a else (response_b, response_a)
    return Pair(prompt_id, chosen, rejected, "vote", weight)
