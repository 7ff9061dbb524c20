"""Equivalence-aware clustering of extracted answers.

Answers are first reduced to :mod:`canonical <coact_verl.consistency.canonical>` forms: equal forms are one
class for free and two numbers are compared exactly in-process. A pair of classes that the canonical forms do
not decide is then checked by the :mod:`numeric evaluator <coact_verl.consistency.evaluate>`, which can prove
two answers different (``3\\sqrt{13}`` vs ``3\\sqrt{14}``, ``(1,2]`` vs ``(1,3]``). Only the remaining pairs go to
math-verify, in a :class:`~coact_verl.consistency.pool.HardTimeoutPool`:

* every distinct form is parsed at most once (bounded LRU of parse results, failures included);
* a parsed number whose value is far from the other side's value is "not equal" without a comparison, and
  structurally identical parses are "equal" without one; a relation that is not an assignment (``44-28=16``,
  ``x+1>2``) as gold never accepts a plain number, so such a pair is "not equal" once the relation is parsed
  (both directions in clustering; in the label path only when the relation is the gold);
* classes are clustered greedily (:mod:`~coact_verl.consistency.greedy`): in order of size (ties: first
  appearance) each class joins the first cluster whose leader it is equivalent to, else it leads a new one.
  All groups of a batch advance together, so a batch costs a few pool round-trips, not one per pair, and the
  work grows with the number of distinct answers per group, not with n².

A parse or comparison that times out, crashes its worker or raises counts as "no parse" / "not equal" and is
counted in :meth:`AnswerClusterer.stats`; it never fails the batch.

Rules that keep different answers apart:

* clustering compares both directions: two answers join only when ``verify(a, b)`` and ``verify(b, a)`` both
  hold (math-verify's ``verify`` is asymmetric by design); the label path (:meth:`AnswerClusterer.same`, a gold
  or oracle answer against a response) uses the gold's direction, as graders do;
* a parse failure, an empty parse, a parse to ``zoo``/``nan`` (``12:00`` reads as 12/0) or a timeout never makes
  two answers equal; only identical normalised texts are equal without a parse;
* times of day (``h:mm``, optional am/pm) are compared as times; two different times are different;
* the same rules hold for every task: tuples ``(1,2)`` keep their order, sets ``\\{1,2\\}`` and bare lists
  ``1, 2`` (several boxes, "1 and 2") are unordered, intervals keep their brackets (``(1,2]`` is not ``[1,2]``);
  ``gsm8k`` and ``numeric`` answers are single numbers (``numeric`` compares with ``numeric_rel_tol``).

A pathological answer (``9^{9^{9}}``, 100 KB of nested braces) costs at most ``verify_timeout_s`` in one of
``verify_workers`` processes; the other workers keep serving the rest of the batch, and the stuck worker is
killed and replaced.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency.canonical import Canonical, canonicalize, numbers_equal
from coact_verl.consistency.evaluate import Approx, approximate, definitely_different
from coact_verl.consistency.greedy import LRU, MISSING, FormGroup
from coact_verl.consistency.pool import HardTimeoutPool
from coact_verl.consistency.verify_worker import ParsedAnswer, init_worker, parse_answer, values_differ, verify_pair
from coact_verl.tasks import TASKS


class _Need(NamedTuple):
    """Work a pair is waiting for: texts to parse, or one ``(gold, pred)`` comparison."""

    parse: tuple[str, ...] = ()
    verify: tuple[tuple[str, str], ...] = ()


class AnswerClusterer:
    """Clusters answers by mathematical equivalence (canonical fast path, then math-verify).

    Args:
        config: task, tolerance, math-verify switch, pool size and timeout (see :class:`ConsistencyConfig`).

    The process pool starts on the first call that needs math-verify and stops on :meth:`close`, on leaving a
    ``with`` block, on garbage collection or at interpreter exit. Methods are thread-safe; the ``a*`` variants
    run the work in a thread so that an asyncio event loop keeps running.
    """

    def __init__(self, config: ConsistencyConfig | None = None) -> None:
        self.config = config if config is not None else ConsistencyConfig()
        self._parsed = LRU(self.config.cache_size)
        self._verified = LRU(self.config.cache_size)
        # Results of the call in progress, immune to LRU eviction while the call still needs them.
        self._scratch: dict[str, ParsedAnswer | None] = {}
        self._scratch_pairs: dict[tuple[str, str], bool] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._pool: HardTimeoutPool | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AnswerClusterer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the math-verify workers (a later call starts new ones)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def warmup(self) -> None:
        """Start the workers now and pay their import cost outside the first real call."""
        if self.config.use_math_verify:
            with self._lock:
                self._get_pool().start()

    def stats(self) -> dict[str, int]:
        """Counters: parses, comparisons, cache hits, failed parses/comparisons, and pool timeouts/crashes."""
        with self._lock:
            out = dict(self._counts)
            if self._pool is not None:
                out.update({f"pool_{k}": v for k, v in self._pool.stats.as_dict().items()})
            return out

    def worker_pids(self) -> list[int]:
        """Process ids of the math-verify workers now running (empty when none); for measuring their CPU time."""
        with self._lock:
            return self._pool.worker_pids() if self._pool is not None else []

    def _get_pool(self) -> HardTimeoutPool:
        if self._pool is None:
            cfg = self.config
            self._pool = HardTimeoutPool(
                cfg.verify_workers,
                cfg.verify_timeout_s,
                start_method=cfg.verify_start_method,
                initializer=init_worker,
                memory_mb=cfg.verify_memory_mb,
            )
        return self._pool

    # ------------------------------------------------------------------ public API

    def canonical(self, answer: str, task: str | None = None) -> Canonical:
        """Canonical form of ``answer`` under this clusterer's task and percent policy."""
        return canonicalize(answer, self._task(task), self.config.percent)

    def cluster(self, answers: Sequence[str | None], task: str | None = None) -> list[int]:
        """Cluster id per answer, shape ``(n,)``; ``-1`` for ``None``.

        Cluster 0 is the largest; ties go to the cluster whose first member appears first, so the ids are a
        deterministic function of the answer list.
        """
        return self.cluster_many([answers], task)[0]

    def cluster_many(self, groups: Sequence[Sequence[str | None]], task: str | None = None) -> list[list[int]]:
        """:meth:`cluster` for many groups at once, sharing math-verify round-trips across groups."""
        task = self._task(task)
        with self._lock:
            try:
                return self._cluster_many(groups, task)
            finally:
                self._forget_call()

    def _cluster_many(self, groups: Sequence[Sequence[str | None]], task: str) -> list[list[int]]:
        states = [FormGroup.from_answers(g, lambda a: self.canonical(a, task), _form_key) for g in groups]
        active = [s for s in states if not s.done]
        if self.config.use_math_verify:  # parse every symbolic form that some pair will need, in one trip
            texts: dict[str, None] = {}
            for s in active:
                for i, a in enumerate(s.forms):
                    for b in s.forms[i + 1 :]:
                        if self._quick(a, b, task) is None:
                            texts.update((f.text, None) for f in (a, b) if not f.is_number)
            missing = tuple(t for t in texts if self._parsed_of(t) is MISSING)
            if missing:
                self._resolve([_Need(parse=missing)])

        def decide(a: Canonical, b: Canonical) -> bool | _Need:
            return self._decide(a, b, task, both=True)

        while active:
            needs = [need for s in active for need in s.advance(decide)]
            active = [s for s in active if not s.done]
            if needs:
                self._resolve(needs)
        return [s.cluster_ids() for s in states]

    def same(self, a: str | None, b: str | None, task: str | None = None) -> bool:
        """Whether two answers are equivalent (``a`` plays math-verify's gold); ``None`` equals nothing."""
        return self.same_many([(a, b)], task)[0]

    def same_local(self, a: str | None, b: str | None, task: str | None = None) -> bool:
        """Equivalence by the canonical fast path alone: ``True`` is certain, ``False`` may be "unknown"."""
        if a is None or b is None:
            return False
        task = self._task(task)
        ca, cb = self.canonical(a, task), self.canonical(b, task)
        if ca.key == cb.key:
            return True
        if ca.is_number and cb.is_number:
            return numbers_equal(ca, cb, self.config.numeric_rel_tol if task == "numeric" else None)
        return False

    def fast_verdict(self, a: str, b: str, task: str | None = None) -> bool | None:
        """The in-process verdict (canonical forms, exact numbers, times, numeric evaluation) without any cached
        math-verify result: ``True``/``False`` where the fast paths decide, ``None`` where math-verify must."""
        task = self._task(task)
        return self._quick(self.canonical(a, task), self.canonical(b, task), task)

    def same_many(self, pairs: Sequence[tuple[str | None, str | None]], task: str | None = None) -> list[bool]:
        """:meth:`same` for many pairs, batched into a few pool round-trips."""
        task = self._task(task)
        with self._lock:
            try:
                return self._same_many(pairs, task)
            finally:
                self._forget_call()

    def same_many_now(
        self, pairs: Sequence[tuple[str | None, str | None]], task: str | None = None
    ) -> list[bool | None] | None:
        """:meth:`same_many` decided in-process (canonical forms, numbers, cached parses and verdicts): ``None``
        for a pair that needs the math-verify pool. Never waits: returns ``None`` outright while another thread
        holds the clusterer (e.g. during a pool round-trip), so an event loop may call it."""
        task = self._task(task)
        if not self._lock.acquire(blocking=False):
            return None
        try:
            decided = [False if p is None else self._decide(p[0], p[1], task) for p in self._forms(pairs, task)]
            return [None if isinstance(d, _Need) else d for d in decided]
        finally:
            self._forget_call()
            self._lock.release()

    def _forms(
        self, pairs: Sequence[tuple[str | None, str | None]], task: str
    ) -> list[tuple[Canonical, Canonical] | None]:
        """Canonical forms of each pair; ``None`` for a pair with a missing answer (equal to nothing)."""
        return [
            (self.canonical(a, task), self.canonical(b, task)) if a is not None and b is not None else None
            for a, b in pairs
        ]

    def _same_many(self, pairs: Sequence[tuple[str | None, str | None]], task: str) -> list[bool]:
        forms = self._forms(pairs, task)
        while True:
            needs = [d for p in forms if p is not None and isinstance(d := self._decide(p[0], p[1], task), _Need)]
            if not needs:
                return [p is not None and self._decide(p[0], p[1], task) is True for p in forms]
            self._resolve(needs)

    async def acluster(self, answers: Sequence[str | None], task: str | None = None) -> list[int]:
        """:meth:`cluster` without blocking the running event loop."""
        return await asyncio.to_thread(self.cluster, answers, task)

    async def acluster_many(self, groups: Sequence[Sequence[str | None]], task: str | None = None) -> list[list[int]]:
        """:meth:`cluster_many` without blocking the running event loop."""
        return await asyncio.to_thread(self.cluster_many, groups, task)

    async def asame(self, a: str | None, b: str | None, task: str | None = None) -> bool:
        """:meth:`same` without blocking the running event loop."""
        return await asyncio.to_thread(self.same, a, b, task)

    async def asame_many(self, pairs: Sequence[tuple[str | None, str | None]], task: str | None = None) -> list[bool]:
        """:meth:`same_many` without blocking the running event loop."""
        return await asyncio.to_thread(self.same_many, pairs, task)

    # ------------------------------------------------------------------ internals

    def _task(self, task: str | None) -> str:
        task = self.config.task if task is None else task
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return task

    def _forget_call(self) -> None:
        self._scratch.clear()
        self._scratch_pairs.clear()

    def _parsed_of(self, text: str) -> Any:
        found = self._scratch.get(text, MISSING)
        if found is MISSING:
            found = self._parsed.get(text)
            if found is not MISSING:
                self._counts["parse_cache_hits"] += 1
                self._scratch[text] = found
        return found

    def _quick(self, a: Canonical, b: Canonical, task: str) -> bool | None:
        """In-process decision (canonical forms, exact numbers, numeric evaluation); ``None`` if undecided."""
        if a.key == b.key:
            return True
        if a.key[0] == b.key[0] == "time":  # two different times of day
            return False
        if a.is_number and b.is_number:
            return numbers_equal(a, b, self.config.numeric_rel_tol if task == "numeric" else None)
        if not self.config.use_math_verify:
            return False
        ea, eb = _approx(a), _approx(b)
        if ea is None or eb is None:
            return None
        if task == "numeric" and ea.kind == eb.kind == "scalar":  # numbers compare with a relative tolerance
            return _close(ea.values[0], eb.values[0], self.config.numeric_rel_tol)
        return False if definitely_different(ea, eb) else None

    def _decide(self, a: Canonical, b: Canonical, task: str, *, both: bool = False) -> bool | _Need:
        """``True``/``False`` when known, else the work still needed.

        ``a`` is math-verify's gold side; with ``both`` (clustering, where neither answer is the reference) the
        pair is equal only when ``verify`` holds in both directions, since ``verify`` is asymmetric by design
        (a gold ``x = 3`` accepts ``3``; a gold interval accepts an inequality only with an option).
        """
        quick = self._quick(a, b, task)
        if quick is not None:
            return quick
        pa: Any = None if a.is_number else self._parsed_of(a.text)  # ParsedAnswer, None (no parse) or MISSING
        pb: Any = None if b.is_number else self._parsed_of(b.text)
        missing = tuple(t for t, p in ((a.text, pa), (b.text, pb)) if p is MISSING)
        if missing:
            return _Need(parse=missing)
        if (not a.is_number and pa is None) or (not b.is_number and pb is None):
            return False  # a symbolic answer that math-verify cannot parse equals nothing else
        if a.is_number != b.is_number and (pb if a.is_number else pa).relation and (both or not a.is_number):
            return False  # a relation as gold never accepts a number (see ``ParsedAnswer.relation``)
        va = _number_value(a) if a.is_number else pa.value
        vb = _number_value(b) if b.is_number else pb.value
        if va is not None and vb is not None:
            if task == "numeric":
                return _close(va, vb, self.config.numeric_rel_tol)
            if values_differ(va, vb):
                return False
        if pa is not None and pb is not None and pa.key is not None and pa.key == pb.key:
            return True
        if a.is_number or b.is_number:  # a number close to a symbolic value: parse the number too
            pa = self._parsed_of(a.text) if a.is_number else pa
            pb = self._parsed_of(b.text) if b.is_number else pb
            missing = tuple(t for t, p in ((a.text, pa), (b.text, pb)) if p is MISSING)
            if missing:
                return _Need(parse=missing)
            if pa is None or pb is None:
                return False
        pairs = [(a.text, b.text), (b.text, a.text)] if both and a.text != b.text else [(a.text, b.text)]
        for pair in pairs:  # the reverse direction is asked for only once the forward one holds
            known = self._verdict_of(pair)
            if known is False:
                return False
            if known is MISSING:
                return _Need(verify=(pair,))
        return True

    def _verdict_of(self, pair: tuple[str, str]) -> Any:
        if pair in self._scratch_pairs:
            return self._scratch_pairs[pair]
        cached = self._verified.get(pair)
        if cached is not MISSING:
            self._counts["verify_cache_hits"] += 1
            self._scratch_pairs[pair] = bool(cached)
            return bool(cached)
        return MISSING

    def _resolve(self, needs: list[_Need]) -> None:
        """Run the parses (first) or else the comparisons that ``needs`` ask for, in one pool round-trip."""
        texts = list(dict.fromkeys(t for need in needs for t in need.parse))
        if texts:
            outcomes = self._get_pool().map(parse_answer, texts)
            self._counts["parses"] += len(texts)
            for text, outcome in zip(texts, outcomes, strict=True):
                parsed = outcome.value if outcome.ok else None
                if not outcome.ok:
                    self._counts[f"parse_{outcome.status}"] += 1
                self._parsed.put(text, parsed)
                self._scratch[text] = parsed
            return
        pairs = list(dict.fromkeys(pair for need in needs for pair in need.verify))
        if not pairs:
            return
        parsed = {t: cast(ParsedAnswer, self._scratch[t]) for pair in pairs for t in pair}  # both sides parsed
        blobs = [(parsed[g].blob, parsed[p].blob) for g, p in pairs]
        outcomes = self._get_pool().map(verify_pair, blobs)
        self._counts["verifies"] += len(pairs)
        for pair, outcome in zip(pairs, outcomes, strict=True):
            if not outcome.ok:
                self._counts[f"verify_{outcome.status}"] += 1
            equal = bool(outcome.value) if outcome.ok else False
            self._verified.put(pair, equal)
            self._scratch_pairs[pair] = equal


def _close(a: complex, b: complex, rel_tol: float) -> bool:
    return abs(a - b) <= rel_tol * max(abs(a), abs(b))


def _form_key(form: Canonical) -> tuple[str, object]:
    return form.key


def _approx(form: Canonical) -> Approx | None:
    if form.is_number:
        value = _number_value(form)
        return Approx("scalar", (value.real,)) if value is not None else None
    return approximate(form.text)


def _number_value(form: Canonical) -> complex | None:
    try:
        return complex(float(form.value))  # type: ignore[arg-type]
    except OverflowError:
        return None
