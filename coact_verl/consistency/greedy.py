"""Deterministic greedy clustering of one group's distinct answer forms, and a small LRU cache.

The clustering is independent of how two forms are compared: :meth:`FormGroup.advance` takes a ``decide``
function that answers ``True``, ``False`` or "not yet" (any other value, e.g. pending math-verify work), so the
caller can advance many groups, batch all their pending work, and advance them again.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

MISSING: Any = object()
F = TypeVar("F")


class LRU:
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: collections.OrderedDict[Any, Any] = collections.OrderedDict()

    def get(self, key: Hashable, default: Any = MISSING) -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return default
        self.data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class FormGroup(Generic[F]):
    """One group's distinct forms, in processing order (size desc, ties by first appearance).

    Attributes:
        forms: distinct forms, shape ``(k,)``.
        counts: answers per form, shape ``(k,)``.
        firsts: index of each form's first answer, shape ``(k,)``.
        form_of: form index per answer, shape ``(n,)``; ``-1`` for no answer.
        leaders: form indices that lead a cluster, in creation order.
        cluster_of_form: leader slot of each placed form (forms ``0..cursor-1``).
    """

    forms: list[F]
    counts: list[int]
    firsts: list[int]
    form_of: list[int]
    leaders: list[int] = field(default_factory=list)
    cluster_of_form: list[int] = field(default_factory=list)
    cursor: int = 0

    @classmethod
    def from_answers(
        cls, answers: Sequence[str | None], form: Callable[[str], F], key: Callable[[F], Hashable]
    ) -> FormGroup[F]:
        """Group ``answers`` by ``key(form(answer))``; ``None`` answers belong to no form."""
        if isinstance(answers, str):
            raise TypeError("a group must be a sequence of answers, not a single string")
        index: dict[Hashable, int] = {}
        forms: list[F] = []
        counts: list[int] = []
        firsts: list[int] = []
        form_of: list[int] = []
        for i, answer in enumerate(answers):
            if answer is None:
                form_of.append(-1)
                continue
            if not isinstance(answer, str):
                raise TypeError(f"answers must be str or None, got {type(answer).__name__} at position {i}")
            f = form(answer)
            j = index.get(key(f))
            if j is None:
                j = index[key(f)] = len(forms)
                forms.append(f)
                counts.append(0)
                firsts.append(i)
            counts[j] += 1
            form_of.append(j)
        order = sorted(range(len(forms)), key=lambda j: (-counts[j], firsts[j]))
        rank = {j: r for r, j in enumerate(order)}
        group = cls(
            forms=[forms[j] for j in order],
            counts=[counts[j] for j in order],
            firsts=[firsts[j] for j in order],
            form_of=[rank[j] if j >= 0 else -1 for j in form_of],
        )
        if len(group.forms) == 1:
            group.leaders, group.cluster_of_form, group.cursor = [0], [0], 1
        return group

    @property
    def done(self) -> bool:
        return self.cursor >= len(self.forms)

    def advance(self, decide: Callable[[F, F], Any]) -> list[Any]:
        """Place forms until one waits on an undecided comparison; return what it waits on (``[]``: done).

        Each form joins the first leader (in creation order) that ``decide(leader, form)`` calls equal; when no
        leader does, it leads a new cluster. A form is placed only once every earlier leader is decided.
        """
        while self.cursor < len(self.forms):
            form = self.forms[self.cursor]
            pending: list[Any] = []
            joined = None
            for slot, leader in enumerate(self.leaders):
                decision = decide(self.forms[leader], form)
                if decision is True:
                    joined = slot
                    break
                if decision is not False:
                    pending.append(decision)
            if pending:
                return pending
            if joined is None:
                joined = len(self.leaders)
                self.leaders.append(self.cursor)
            self.cluster_of_form.append(joined)
            self.cursor += 1
        return []

    def cluster_ids(self) -> list[int]:
        """Cluster id per answer, shape ``(n,)``: 0 is the largest cluster, ties by first appearance; -1: none."""
        sizes = [0] * len(self.leaders)
        first = [len(self.form_of)] * len(self.leaders)
        for f, c in enumerate(self.cluster_of_form):
            sizes[c] += self.counts[f]
            first[c] = min(first[c], self.firsts[f])
        order = sorted(range(len(self.leaders)), key=lambda c: (-sizes[c], first[c]))
        final = {c: rank for rank, c in enumerate(order)}
        return [final[self.cluster_of_form[f]] if f >= 0 else -1 for f in self.form_of]
