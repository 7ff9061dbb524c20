"""Training pairs from stored comparison votes and coactive edits, weighted and filtered by attentiveness.

A vote shows two responses, ``a`` and ``b``. ``stronger`` names the side that came from the model believed
stronger on average (model A of :mod:`coact_verl.feedback.attentiveness`), ``picked`` the side the annotator
preferred, and ``better`` (control votes only) the side known to be better. The EM sees a vote as
``Vote(annotator, picked_a=picked == stronger, a_better=better == stronger)``.

Pairs (chosen ≻ rejected):

* vote: chosen = the picked response, rejected = the other, weight = the annotator's η̂; votes of annotators
  with η̂ < ``min_eta`` are dropped (``min_eta = 0`` keeps every vote);
* edit: chosen = the edited response, rejected = the original, weight 1 (an edit is a preference, not a gold
  answer).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from coact_verl.feedback.attentiveness import Vote
from coact_verl.rewards.pairs import Pair

Side = Literal["a", "b"]
FeedbackKind = Literal["vote", "edit"]
SIDES: tuple[str, ...] = ("a", "b")
# Column order of the per-annotator counts taken by ``estimate_attentiveness_from_counts``.
ORDINARY_STRONGER, ORDINARY_WEAKER, CONTROL_RIGHT, CONTROL_WRONG = range(4)


@dataclass(frozen=True)
class VoteRecord:
    """A stored comparison vote; ``id`` orders records by commit."""

    id: int
    annotator: Hashable
    prompt_id: str
    prompt: str
    task: str
    response_a: str
    response_b: str
    stronger: Side
    picked: Side
    better: Side | None = None

    def __post_init__(self) -> None:
        for name in ("stronger", "picked") + (("better",) if self.better is not None else ()):
            if getattr(self, name) not in SIDES:
                raise ValueError(f"{name} must be 'a' or 'b', got {getattr(self, name)!r}")

    @property
    def is_control(self) -> bool:
        """Whether the better response is known."""
        return self.better is not None


@dataclass(frozen=True)
class EditRecord:
    """A stored coactive edit: ``edited`` ≻ ``original``."""

    id: int
    annotator: Hashable
    prompt_id: str
    prompt: str
    task: str
    original: str
    edited: str


@dataclass(frozen=True)
class FeedbackPair:
    """A preference pair for training, with the id of the record it came from."""

    id: int
    kind: FeedbackKind
    prompt_id: str
    prompt: str
    task: str
    chosen: str
    rejected: str
    weight: float
    annotator: Hashable

    def as_pair(self) -> Pair:
        """The pair as a :class:`~coact_verl.rewards.pairs.Pair` with literal texts (source = ``kind``)."""
        return Pair(self.prompt_id, self.chosen, self.rejected, self.kind, self.weight)


def em_vote(vote: VoteRecord) -> Vote:
    """The attentiveness model's view of a vote: model A is the stronger side."""
    a_better = None if vote.better is None else vote.better == vote.stronger
    return Vote(vote.annotator, vote.picked == vote.stronger, a_better)


def vote_kind(vote: VoteRecord) -> int:
    """Count column of a vote: ``ORDINARY_STRONGER``, ``ORDINARY_WEAKER``, ``CONTROL_RIGHT`` or ``CONTROL_WRONG``."""
    if vote.better is None:
        return ORDINARY_STRONGER if vote.picked == vote.stronger else ORDINARY_WEAKER
    return CONTROL_RIGHT if vote.picked == vote.better else CONTROL_WRONG


def vote_counts(votes: Iterable[VoteRecord]) -> dict[Hashable, list[int]]:
    """Per-annotator counts of the four vote kinds (first-seen order), the input of the counts EM."""
    counts: dict[Hashable, list[int]] = {}
    for vote in votes:
        counts.setdefault(vote.annotator, [0, 0, 0, 0])[vote_kind(vote)] += 1
    return counts


def vote_to_pair(vote: VoteRecord, eta: float) -> FeedbackPair:
    """Chosen = the picked response, rejected = the other, weight = ``eta`` (the annotator's η̂)."""
    chosen, rejected = (vote.response_a, vote.response_b) if vote.picked == "a" else (vote.response_b, vote.response_a)
    return FeedbackPair(vote.id, "vote", vote.prompt_id, vote.prompt, vote.task, chosen, rejected, eta, vote.annotator)


def edit_to_pair(edit: EditRecord) -> FeedbackPair:
    """Chosen = the edited response, rejected = the original, weight 1."""
    return FeedbackPair(
        edit.id, "edit", edit.prompt_id, edit.prompt, edit.task, edit.edited, edit.original, 1.0, edit.annotator
    )


def pairs_from_feedback(
    records: Iterable[VoteRecord | EditRecord],
    eta: Mapping[Hashable, float],
    min_eta: float = 0.5,
    unknown_eta: float = 0.0,
) -> list[FeedbackPair]:
    """Pairs in input order: every edit, and the votes of annotators with η̂ ≥ ``min_eta``.

    Args:
        records: stored votes and edits (usually in commit order).
        eta: η̂ per annotator, in [0, 1].
        min_eta: votes of annotators whose η̂ is below this are dropped.
        unknown_eta: η̂ of annotators absent from ``eta``.
    """
    pairs = []
    for record in records:
        if isinstance(record, EditRecord):
            pairs.append(edit_to_pair(record))
            continue
        weight = float(eta.get(record.annotator, unknown_eta))
        if weight >= min_eta:
            pairs.append(vote_to_pair(record, weight))
    return pairs


__all__ = [
    "CONTROL_RIGHT",
    "CONTROL_WRONG",
    "ORDINARY_STRONGER",
    "ORDINARY_WEAKER",
    "EditRecord",
    "FeedbackPair",
    "Side",
    "VoteRecord",
    "edit_to_pair",
    "em_vote",
    "pairs_from_feedback",
    "vote_counts",
    "vote_kind",
    "vote_to_pair",
]
