"""Preference pairs from users (comparison votes, edits) waiting to be trained on with DPO.

The trainer reads new pairs from the oracle service (``GET /v1/feedback/pairs``, votes already filtered
and weighted by the voter's attentiveness η̂) and queues them here. Each pair becomes one verl row whose
agent loop does not sample: session 0 replays the chosen response and session 1 the rejected one, so the
pair's two sequences get reference log-probs from verl's reference worker like any other (an edited
response is off-policy; that is all DPO needs). The queue and the service cursor are saved with each
checkpoint, so a resumed run neither loses nor repeats a pair.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from coact_verl import metric_keys as keys
from coact_verl.records import SOURCE_NONE, FeedbackPair, PromptRow
from coact_verl.state_file import read_json, write_json_atomic

#: ``data_source`` and agent-loop name of feedback rows.
FEEDBACK_SOURCE = "coact/feedback"
FEEDBACK_AGENT = "coact_feedback"
PAIR_FIELDS = ("id", "kind", "prompt_id", "prompt", "task", "chosen", "rejected", "weight")


def feedback_row(pair: Mapping[str, Any]) -> dict[str, Any]:
    """verl dataset row of one pair (:class:`~coact_verl.records.PromptRow`, split ``feedback``); the pair
    itself travels in the row's :class:`~coact_verl.records.FeedbackPair`."""
    return PromptRow(
        prompt_id=str(pair["prompt_id"]),
        question=str(pair["prompt"]),
        task=str(pair["task"]),
        data_source=FEEDBACK_SOURCE,
        split="feedback",
        index=int(pair["id"]),
        content=str(pair["prompt"]),
        ability="feedback",
        provenance="feedback",
        label_source=SOURCE_NONE,
        feedback=FeedbackPair(str(pair["kind"]), str(pair["chosen"]), str(pair["rejected"]), float(pair["weight"])),
        agent_name=FEEDBACK_AGENT,
    ).to_row()


class FeedbackQueue:
    """FIFO of preference pairs and the service cursor (the id of the last pair read)."""

    def __init__(self) -> None:
        self.cursor = 0
        self.received = 0
        self.served = 0
        self._pairs: deque[dict[str, Any]] = deque()

    def __len__(self) -> int:
        return len(self._pairs)

    def extend(self, pairs: Iterable[Mapping[str, Any]], next_cursor: int) -> int:
        """Queue pairs read from the service; returns how many were new. Malformed pairs raise ``ValueError``."""
        added = 0
        for pair in pairs:
            missing = [name for name in PAIR_FIELDS if name not in pair]
            if missing or not str(pair["chosen"]).strip() or not float(pair["weight"]) > 0:
                raise ValueError(f"malformed feedback pair {dict(pair)!r} (missing {missing})")
            if int(pair["id"]) <= self.cursor:
                continue  # already read before a restart of the reader
            self._pairs.append({name: pair[name] for name in PAIR_FIELDS})
            self.cursor = int(pair["id"])
            added += 1
        self.cursor = max(self.cursor, int(next_cursor))
        self.received += added
        return added

    def take(self, k: int) -> list[dict[str, Any]]:
        """Up to ``k`` pairs, oldest first, as verl rows (:func:`feedback_row`)."""
        rows: list[dict[str, Any]] = []
        while self._pairs and len(rows) < k:
            rows.append(feedback_row(self._pairs.popleft()))
        self.served += len(rows)
        return rows

    def metrics(self) -> dict[str, float]:
        return {
            keys.FEEDBACK_QUEUED: float(len(self._pairs)),
            keys.FEEDBACK_RECEIVED: float(self.received),
            keys.FEEDBACK_SERVED: float(self.served),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "received": self.received, "served": self.served, "pairs": list(self._pairs)}

    def save(self, path: str | Path) -> Path:
        """Write the state as JSON atomically (as the prompt pool is)."""
        return write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeedbackQueue:
        """A queue restored from a file written by :meth:`save`."""
        queue = cls()
        queue.load_state_dict(read_json(path))
        return queue

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.cursor = int(state["cursor"])
        self.received = int(state["received"])
        self.served = int(state["served"])
        self._pairs = deque(dict(p) for p in state["pairs"])
