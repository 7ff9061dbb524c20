"""The prompt pool: every prompt CoAct knows about, with where it came from and what label it carries.

Provenance of an entry:

* ``dataset``: an unlabelled prompt of the training set;
* ``oracle``: a prompt the oracle labelled (a dataset prompt is promoted when its label arrives, including
  late labels that arrive after the step the prompt was trained in);
* ``generated``: a question the policy wrote and then answered consistently enough to be admitted, with its
  majority answer as self-label.

Oracle-labelled prompts whose majority answer the oracle did not contradict are the few-shot seeds of
question generation (:meth:`PromptPool.sample_seeds`). Newly admitted generated questions and late-labelled
prompts wait in a FIFO queue until :meth:`PromptPool.take_for_training` hands them out as verl rows, once each.
Every text passes the exact and near-duplicate check of :class:`~coact_verl.pool.dedup.DedupIndex`.

The whole state (entries in insertion order, the queue, the counters and the seed-sampling RNG) is plain
JSON; :meth:`PromptPool.save` writes it atomically, so a checkpoint holds either the old or the new pool.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coact_verl import metric_keys as keys
from coact_verl.config import GenerationConfig
from coact_verl.pool.dedup import DedupIndex, Duplicate
from coact_verl.records import SOURCE_NONE, PromptRow
from coact_verl.state_file import read_json, write_json_atomic
from coact_verl.tasks import TASKS, prompt_id

PROVENANCES = ("dataset", "oracle", "generated")
LABEL_SOURCES = ("oracle", "self")
DUPLICATE_KINDS = ("exact", "near")
GENERATED_SOURCE = "coact/generated"
ORACLE_SOURCE = "coact/oracle"
STATE_FORMAT = "coact-prompt-pool"
STATE_VERSION = 1


@dataclass
class PoolEntry:
    """One prompt of the pool.

    Attributes:
        prompt_id: :func:`coact_verl.tasks.prompt_id` of ``(data_source, question)``.
        question: the question text without any answer-format instruction.
        task: answer format, one of ``gsm8k``, ``math``, ``numeric``.
        provenance: ``dataset``, ``oracle`` or ``generated``.
        data_source: verl ``data_source`` of the prompt.
        label: the label answer, or ``None`` when unlabelled.
        label_source: ``oracle``, ``self`` or ``None``.
        step_added: training step at which the prompt entered the pool.
        label_step: training step at which the current label arrived (``None`` without a label).
        majority_correct: for oracle labels, whether the policy's majority answer agreed with it (``None``: unknown).
        times_served: how often :meth:`PromptPool.take_for_training` (or :meth:`PromptPool.mark_served`) served it.
    """

    prompt_id: str
    question: str
    task: str
    provenance: str
    data_source: str
    label: str | None = None
    label_source: str | None = None
    step_added: int = 0
    label_step: int | None = None
    majority_correct: bool | None = None
    times_served: int = 0

    @property
    def is_seed(self) -> bool:
        """Usable as a few-shot seed: oracle-labelled, and the oracle did not mark the policy's majority wrong."""
        return self.label_source == "oracle" and self.majority_correct is not False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolEntry:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        return cls(**data)


def to_verl_row(entry: PoolEntry, index: int = 0) -> dict[str, Any]:
    """verl dataset row of an entry (:class:`~coact_verl.records.PromptRow`, split ``pool``): the task's
    answer instruction in the prompt, empty ``ground_truth``; the pool's label travels in the row's label keys
    (``""`` / ``"none"`` without one), never in ``reward_model``."""
    return PromptRow(
        prompt_id=entry.prompt_id,
        question=entry.question,
        task=entry.task,
        data_source=entry.data_source,
        split="pool",
        index=index,
        provenance=entry.provenance,
        label=entry.label or "",
        label_source=entry.label_source or SOURCE_NONE,
    ).to_row()


class PromptPool:
    """Prompts with provenance and labels, a duplicate index, a training queue and a seed-sampling RNG.

    Args:
        seed: seed of the RNG that :meth:`sample_seeds` uses by default.
        near_threshold: character 5-gram Jaccard at or above which a new text is a near-duplicate.
        ngram: characters per shingle of the duplicate index.
        num_perm: MinHash values per text in the duplicate index.

    Not thread-safe: use one pool from one thread (or one event loop).
    """

    def __init__(self, seed: int = 0, near_threshold: float = 0.8, ngram: int = 5, num_perm: int = 64) -> None:
        self.seed = seed
        self.near_threshold = near_threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self._reset()

    @classmethod
    def from_config(cls, config: GenerationConfig) -> PromptPool:
        """Pool with the ``seed`` and ``near_duplicate_threshold`` of a :class:`~coact_verl.config.GenerationConfig`."""
        return cls(seed=config.seed, near_threshold=config.near_duplicate_threshold)

    def _reset(self) -> None:
        self._entries: dict[str, PoolEntry] = {}
        self._index_of: dict[str, int] = {}
        self._dedup = DedupIndex(self.near_threshold, self.ngram, self.num_perm)
        self._queue: list[str] = []
        self._queued: set[str] = set()
        self._rejected: Counter[str] = Counter()
        self._sizes: Counter[str] = Counter()
        self._late_labels = 0
        self._served = 0
        self.label_cursor = 0
        self._rng = random.Random(self.seed)
        self._seeds: list[PoolEntry] | None = None

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pid: object) -> bool:
        return pid in self._entries

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(self._entries.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PromptPool):
            return NotImplemented
        return self.state_dict() == other.state_dict()

    __hash__ = None  # type: ignore[assignment]

    def get(self, pid: str) -> PoolEntry | None:
        """The entry with this prompt id, or ``None``."""
        return self._entries.get(pid)

    def find_duplicate(self, question: str, near: bool = True) -> Duplicate | None:
        """The stored prompt that ``question`` duplicates (``Duplicate.key`` is its prompt id), or ``None``."""
        return self._dedup.find(question, near=near)

    # ------------------------------------------------------------------ growth

    def add(
        self,
        question: str,
        task: str,
        provenance: str = "dataset",
        *,
        data_source: str | None = None,
        label: str | None = None,
        label_source: str | None = None,
        step: int = 0,
        majority_correct: bool | None = None,
        queue: bool | None = None,
        near: bool = True,
    ) -> bool:
        """Add a prompt; ``False`` (and a counted ``exact``/``near`` rejection) when it duplicates a stored one.

        Args:
            question: question text without an answer instruction.
            task: ``gsm8k``, ``math`` or ``numeric``.
            provenance: ``dataset``, ``oracle`` or ``generated``.
            data_source: verl ``data_source``; defaults to ``coact/generated`` / ``coact/oracle`` / ``dataset``.
            label: label answer (required for ``oracle`` and ``generated``).
            label_source: ``oracle`` or ``self``; defaults to ``oracle`` for oracle entries, ``self`` otherwise.
            step: training step at which the prompt is added.
            majority_correct: for oracle labels, whether the policy's majority agreed with the oracle.
            queue: queue for :meth:`take_for_training`; defaults to ``True`` for generated prompts only.
            near: also reject near-duplicates (exact duplicates are always rejected).
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if provenance not in PROVENANCES:
            raise ValueError(f"provenance must be one of {PROVENANCES}, got {provenance!r}")
        if provenance != "dataset" and label is None:
            raise ValueError(f"a {provenance} prompt needs a label")
        if label is not None and label_source is None:
            label_source = "oracle" if provenance == "oracle" else "self"
        if label_source is not None and label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        if data_source is None:
            data_source = {"generated": GENERATED_SOURCE, "oracle": ORACLE_SOURCE}.get(provenance, "dataset")
        pid = prompt_id(data_source, question)
        if pid in self._entries:
            self._rejected["exact"] += 1
            return False
        duplicate = self._dedup.add(question, pid, near=near)
        if duplicate is not None:
            self._rejected[duplicate.kind] += 1
            return False
        entry = PoolEntry(
            prompt_id=pid,
            question=question,
            task=task,
            provenance=provenance,
            data_source=data_source,
            label=label,
            label_source=label_source if label is not None else None,
            step_added=step,
            label_step=step if label is not None else None,
            majority_correct=majority_correct,
        )
        self._insert(entry)
        if queue if queue is not None else provenance == "generated":
            self._enqueue(pid)
        return True

    def _insert(self, entry: PoolEntry) -> None:
        self._index_of[entry.prompt_id] = len(self._entries)
        self._entries[entry.prompt_id] = entry
        self._sizes[entry.provenance] += 1
        if entry.is_seed:
            self._seeds = None

    def _enqueue(self, pid: str) -> None:
        if pid not in self._queued:
            self._queue.append(pid)
            self._queued.add(pid)

    def add_oracle_label(
        self,
        pid: str,
        answer: str,
        step: int,
        *,
        question: str | None = None,
        task: str | None = None,
        data_source: str | None = None,
        majority_correct: bool | None = None,
        late: bool = False,
    ) -> PoolEntry:
        """Record an oracle label; a dataset entry becomes ``oracle``; returns the labelled entry.

        Args:
            pid: prompt id the label belongs to.
            answer: the oracle's answer.
            step: training step at which the label arrived.
            question, task, data_source: describe a prompt the pool does not hold yet (it is then added as
                ``oracle`` without a near-duplicate check, since the label is already paid for; an exact
                duplicate of a stored prompt receives the label instead).
            majority_correct: whether the policy's majority answer agreed with the oracle (seed eligibility).
            late: the label arrived after the prompt's training step; the prompt is queued for training again.

        Raises:
            KeyError: unknown ``pid`` and no ``question``/``task`` to add it with.
        """
        entry = self._entries.get(pid)
        if entry is None and question is not None:
            duplicate = self._dedup.find(question, near=False)
            entry = self._entries[duplicate.key] if duplicate is not None else None
        if entry is None:
            if question is None or task is None:
                raise KeyError(f"prompt {pid!r} is not in the pool; pass question and task to add it")
            source = data_source or ORACLE_SOURCE
            added = self.add(
                question,
                task,
                "oracle",
                data_source=source,
                label=answer,
                step=step,
                majority_correct=majority_correct,
                queue=False,
                near=False,
            )
            if not added:  # pragma: no cover - exact duplicates were resolved above
                raise RuntimeError(f"could not add oracle-labelled prompt {pid!r}")
            entry = self._entries[prompt_id(source, question)]
        else:
            if entry.provenance == "dataset":
                self._sizes["dataset"] -= 1
                self._sizes["oracle"] += 1
                entry.provenance = "oracle"
            entry.label = answer
            entry.label_source = "oracle"
            entry.label_step = step
            entry.majority_correct = majority_correct
            self._seeds = None
        if late:
            self._late_labels += 1
            self._enqueue(entry.prompt_id)
        return entry

    # ------------------------------------------------------------------ use

    def seeds(self) -> list[PoolEntry]:
        """Entries usable as few-shot seeds (:attr:`PoolEntry.is_seed`), in insertion order."""
        if self._seeds is None:
            self._seeds = [e for e in self._entries.values() if e.is_seed]
        return list(self._seeds)

    def sample_seeds(self, k: int, rng: random.Random | None = None) -> list[PoolEntry]:
        """``min(k, #seeds)`` distinct seed entries drawn without replacement (the pool's own RNG by default)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if self._seeds is None:
            self.seeds()
        population = self._seeds or []
        return (rng or self._rng).sample(population, min(k, len(population)))

    def take_for_training(self, k: int) -> list[dict[str, Any]]:
        """Up to ``k`` queued prompts, oldest first, as verl rows (see :func:`to_verl_row`); each is served once."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        taken, self._queue = self._queue[:k], self._queue[k:]
        rows = []
        for pid in taken:
            self._queued.discard(pid)
            entry = self._entries[pid]
            entry.times_served += 1
            self._served += 1
            rows.append(to_verl_row(entry, self._index_of[pid]))
        return rows

    def mark_served(self, pids: Iterable[str]) -> None:
        """Count prompts served outside :meth:`take_for_training` (e.g. by a data loader); unknown ids are skipped."""
        for pid in pids:
            entry = self._entries.get(pid)
            if entry is not None:
                entry.times_served += 1
                self._served += 1

    @property
    def queued(self) -> int:
        """Prompts waiting for :meth:`take_for_training`."""
        return len(self._queue)

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected duplicates by kind (``exact``, ``near``)."""
        return {kind: self._rejected.get(kind, 0) for kind in DUPLICATE_KINDS}

    def counts(self) -> dict[str, int]:
        """Entries per provenance (every provenance listed, zeros included)."""
        return {p: self._sizes.get(p, 0) for p in PROVENANCES}

    def metrics(self) -> dict[str, float]:
        """``coact/pool/...`` metrics: sizes by provenance, seeds, queue length, duplicates rejected, late labels,
        served."""
        out = {keys.POOL_SIZE: float(len(self._entries))}
        out.update({keys.POOL_SIZE_BY.format(provenance=p): float(n) for p, n in self.counts().items()})
        out[keys.POOL_SEEDS] = float(len(self.seeds()))
        out[keys.POOL_QUEUED] = float(len(self._queue))
        rejected = self.rejected
        out[keys.POOL_DUPLICATES_REJECTED] = float(sum(rejected.values()))
        out.update({keys.POOL_DUPLICATES.format(kind=kind): float(n) for kind, n in rejected.items()})
        out[keys.POOL_LATE_LABELS] = float(self._late_labels)
        out[keys.POOL_SERVED] = float(self._served)
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON state: settings, entries in order, queue, counters and the seed-sampling RNG state."""
        version, internal, gauss = self._rng.getstate()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "settings": {
                "seed": self.seed,
                "near_threshold": self.near_threshold,
                "ngram": self.ngram,
                "num_perm": self.num_perm,
            },
            "entries": [e.to_dict() for e in self._entries.values()],
            "queue": list(self._queue),
            "rejected": dict(sorted(self._rejected.items())),
            "late_labels": self._late_labels,
            "served": self._served,
            "label_cursor": self.label_cursor,
            "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this pool by a :meth:`state_dict` (the duplicate index is rebuilt from the entries)."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"not a prompt-pool state of version {STATE_VERSION}: {state.get('format')!r} v{state.get('version')}"
            )
        settings = state["settings"]
        self.seed = int(settings["seed"])
        self.near_threshold = float(settings["near_threshold"])
        self.ngram = int(settings["ngram"])
        self.num_perm = int(settings["num_perm"])
        self._reset()
        for data in state["entries"]:
            entry = PoolEntry.from_dict(data)
            if entry.prompt_id in self._entries or self._dedup.add(entry.question, entry.prompt_id, near=False):
                raise ValueError(f"pool state holds prompt {entry.prompt_id} twice")
            self._insert(entry)
        for pid in state["queue"]:
            if pid not in self._entries or pid in self._queued:
                raise ValueError(f"pool state queues unknown or repeated prompt {pid!r}")
            self._enqueue(pid)
        self._rejected = Counter({k: int(v) for k, v in state["rejected"].items()})
        self._late_labels = int(state["late_labels"])
        self._served = int(state["served"])
        self.label_cursor = int(state.get("label_cursor", 0))
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

    def save(self, path: str | Path) -> Path:
        """Write the state as JSON atomically (:func:`write_json_atomic`)."""
        return write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> PromptPool:
        """A pool restored from a file written by :meth:`save`."""
        state = read_json(path)
        pool = cls()
        pool.load_state_dict(state)
        return pool
