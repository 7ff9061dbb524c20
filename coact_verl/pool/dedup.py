"""Exact and near-duplicate detection of question texts.

* **Exact**: two texts are duplicates when their :func:`normalize_text` forms are equal (case, whitespace and
  sentence punctuation do not matter; digits, decimal points and math symbols do).
* **Near**: two texts are near-duplicates when the Jaccard similarity of their character ``ngram``-gram sets
  (over the normalised text) is at least ``threshold``.

:class:`DedupIndex` finds near-duplicates without comparing a query against every stored text: MinHash
signatures of ``num_perm`` values are cut into ``bands`` bands of ``rows`` values, each band is a bucket key,
and only texts that share a bucket with the query are compared exactly. ``rows`` is chosen as large as
possible while a pair at exactly ``threshold`` still shares a bucket with probability ≥ 0.99 (higher above
it), so the exact check, not the sketch, decides every reported duplicate.

Cost per :meth:`DedupIndex.add` / :meth:`DedupIndex.find` of a text of L characters with S distinct n-grams:
O(L + num_perm·S) to normalise, shingle and sign (vectorised), ``bands`` dictionary look-ups, and O(S) per
candidate for the exact check, against the candidate's cached shingle set in one vectorised pass over all
candidates. A bucket holds at most ``bucket_size`` texts, so a query has at most ``bands·bucket_size``
candidates and adding N texts costs O(N) time even when they share a template (see :class:`DedupIndex`).
Memory per stored text: its normalised form, its shingle set (4 bytes per distinct n-gram), ``num_perm``
bytes of signature and at most one integer per band in the buckets.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

# Characters kept by the normaliser although Unicode calls them punctuation: they change a problem's meaning.
_MATH_PUNCT = set("-/*()[]{}\\%#&@_")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_WHITESPACE = re.compile(r"\s+")
_POINT = "\x00"  # placeholder for a decimal point while other dots are removed
_MASK64 = (1 << 64) - 1
_BASE = np.uint64(1_000_003)
#: Texts a bucket of :class:`DedupIndex` holds at most (see its docstring).
DEFAULT_BUCKET_SIZE = 32
_MARK_BITS = 18  # table marking a query's shingles: 256 Ki entries, ~0.1% collisions for 250 shingles
_MARK_MASK = np.uint32((1 << _MARK_BITS) - 1)


def normalize_text(text: str) -> str:
    """Canonical form for exact comparison: NFKC, case-folded, sentence punctuation removed, spaces collapsed.

    Thousands separators (``1,000``) are dropped and decimal points (``3.5``) kept; math-significant symbols
    (``+ - * / ^ = ( ) { } \\ %`` and similar) are kept, so ``x+1`` and ``x-1`` stay different.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _THOUSANDS.sub("", text)
    text = _DECIMAL_POINT.sub(_POINT, text)
    text = text.translate(_PUNCT_TABLE)
    if not text.isascii():
        text = "".join(_non_ascii(char) if ord(char) > 127 else char for char in text)
    return _WHITESPACE.sub(" ", text).strip().replace(_POINT, ".")


def _is_punct(char: str) -> bool:
    return char not in _MATH_PUNCT and unicodedata.category(char).startswith("P")


@functools.lru_cache(maxsize=4096)
def _non_ascii(char: str) -> str:
    return " " if _is_punct(char) else char


_PUNCT_TABLE = {code: " " for code in range(128) if _is_punct(chr(code))}


def shingles(normalized: str, ngram: int = 5) -> np.ndarray:
    """Sorted distinct 32-bit hashes of the character ``ngram``-grams of a normalised text, shape ``(S,)``.

    A text shorter than ``ngram`` is one shingle. Hashing is deterministic across processes.
    """
    codes = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = min(ngram, codes.size)
    count = codes.size - width + 1
    h = np.zeros(count, dtype=np.uint64)
    for k in range(width):
        h = h * _BASE + codes[k : k + count]
    return np.unique(_mix64(h) >> np.uint64(32))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity |a ∩ b| / |a ∪ b| of two shingle arrays from :func:`shingles` (1.0 when both empty)."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def similarity(text_a: str, text_b: str, ngram: int = 5) -> float:
    """Character ``ngram``-gram Jaccard similarity of two raw texts, in [0, 1]."""
    return jaccard(shingles(normalize_text(text_a), ngram), shingles(normalize_text(text_b), ngram))


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    # uint64 in, uint64 out; numpy's stubs type uint64 shifts and products as Any
    return cast("NDArray[np.uint64]", x ^ (x >> np.uint64(31)))


def choose_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)`` with the largest ``rows`` such that 1 - (1 - t^rows)^bands ≥ ``recall`` at t = threshold."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def min_agreement(threshold: float, num_perm: int, miss: float) -> int:
    """Largest m with P(Binomial(num_perm, threshold) < m) <= ``miss``: MinHash agreements a pair at the
    threshold reaches with probability >= 1 - ``miss`` (more similar pairs reach it more often)."""
    below = 0.0
    for m in range(num_perm + 1):
        below_next = below + math.comb(num_perm, m) * threshold**m * (1.0 - threshold) ** (num_perm - m)
        if below_next > miss:
            return m
        below = below_next
    return num_perm


@dataclass(frozen=True)
class Duplicate:
    """A stored text that a query duplicates: ``kind`` is ``exact`` or ``near``; ``similarity`` in [0, 1]."""

    kind: str
    key: str
    similarity: float


class DedupIndex:
    """Exact + MinHash-LSH near-duplicate index over texts, each stored under a string key.

    Each stored text keeps its signature (one byte per MinHash value) and its shingle set (in one flat
    array), so nothing is recomputed from a candidate's text. The candidates of a query are scored together:
    first the signatures, dropping a candidate that agrees on fewer values than a pair at ``threshold`` does
    with probability 0.999 (binomial tail: 41 of 64 at 0.8); then the query's shingles are marked in a table,
    every remaining candidate's shingles are looked up in it in one vectorised step, and the hit count is an
    upper bound of the true intersection (a table collision only adds hits). A candidate whose bound is below
    ``threshold`` is therefore not a duplicate; the few others are intersected exactly.

    A bucket holds at most ``bucket_size`` texts; once full it takes no more (the text is still stored in
    its other bands' buckets). A query thus has at most ``bands * bucket_size`` candidates (384 by default)
    whatever the size of the index, the bounded-bucket rule of LSH (Gionis, Indyk & Motwani, 1999). Only
    recall can suffer, and little: a band value shared by more than ``bucket_size`` stored texts is wording
    they all have in common (a question template's fixed text), while two near-duplicates also share the
    bands made of their own wording (names, numbers), whose buckets stay small; a pair at ``threshold``
    shares ``bands * threshold**rows`` ≈ 3.9 bands on average (12 bands of 5 rows at 0.8), so it is missed
    only when every band it shares was already full when the older text arrived. Measured on 100,000
    template-generated questions (``benchmarks/bench_dedup.py``): 99.3% of planted near-duplicates rejected
    against 99.96% without the bound, and 97.6% of all the near-duplicates the unbounded index rejects, at
    half its CPU time and with a per-add cost that stops growing (106 candidates per add). Which
    texts a bucket keeps (the first ones) depends only on the insertion order, so a rebuilt index is the same.

    Not thread-safe (a query uses a scratch table of the index).

    Args:
        threshold: character n-gram Jaccard at or above which two texts are near-duplicates, in (0, 1].
        ngram: characters per shingle.
        num_perm: MinHash values per text.
        seed: seed of the MinHash hash family (fixed, so an index rebuilt from the same texts is identical).
        bucket_size: texts a bucket holds at most (``None``: unbounded, every colliding text is checked).
    """

    def __init__(
        self,
        threshold: float = 0.8,
        ngram: int = 5,
        num_perm: int = 64,
        seed: int = 0,
        bucket_size: int | None = DEFAULT_BUCKET_SIZE,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if ngram < 1 or num_perm < 1:
            raise ValueError("ngram and num_perm must be >= 1")
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size}")
        self.threshold = threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        self.bucket_size = bucket_size
        self.bands, self.rows = choose_bands(threshold, num_perm)
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._band_mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._exact: dict[str, str] = {}
        self._row_of: dict[str, int] = {}
        self._keys: list[str] = []
        # Shingle sets of the stored texts, concatenated: row i is _flat[_start[i] : _start[i] + _len[i]].
        self._flat = np.zeros(1 << 12, dtype=np.uint32)
        self._start = np.zeros(1 << 8, dtype=np.int64)
        self._len = np.zeros(1 << 8, dtype=np.int64)
        self._signatures = np.zeros((1 << 8, num_perm), dtype=np.uint8)  # low byte of each MinHash value
        # A candidate needs this many agreeing MinHash values; a pair at the threshold has fewer with
        # probability <= 0.001 (binomial tail), so the filter costs at most 0.1% recall at the threshold.
        self._min_agreement = min_agreement(threshold, num_perm, 1e-3)
        self._used = 0
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._marks = np.zeros(1 << _MARK_BITS, dtype=bool)
        self.comparisons = 0  # LSH candidates whose Jaccard was decided so far (the near-duplicate search cost)
        self.full_buckets_skipped = 0  # (text, band) pairs not stored because the band's bucket was full

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    def signature(self, shingle_hashes: np.ndarray) -> NDArray[np.uint64]:
        """MinHash signature of a shingle array, shape ``(num_perm,)`` (all ones-bits for an empty text)."""
        if shingle_hashes.size == 0:
            return np.full(self.num_perm, _MASK64, dtype=np.uint64)
        x = shingle_hashes.astype(np.uint64)[None, :]
        # uint64 products, shifts and min stay uint64; numpy's stubs type them as Any
        return cast("NDArray[np.uint64]", ((self._a[:, None] * x + self._b[:, None]) >> np.uint64(32)).min(axis=1))

    def _sketch(self, shingle_hashes: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Band keys (one per band) and the low byte of every MinHash value (the cached signature)."""
        sig = self.signature(shingle_hashes)
        bands = sig[: self.bands * self.rows].reshape(self.bands, self.rows)
        keys = (bands * self._band_mix[None, :]).sum(axis=1, dtype=np.uint64).tolist()
        return keys, sig.astype(np.uint8)

    def find(self, text: str, near: bool = True) -> Duplicate | None:
        """The first stored text that ``text`` duplicates (exact first, then the most similar near one)."""
        normalized = normalize_text(text)
        hit = self._exact.get(normalized)
        if hit is not None:
            return Duplicate("exact", hit, 1.0)
        if not near:
            return None
        query = shingles(normalized, self.ngram).astype(np.uint32)
        return self._find_near(query, self._sketch(query))

    def _candidates(self, keys: list[int]) -> np.ndarray:
        found: list[int] = []
        for table, band_key in zip(self._buckets, keys, strict=True):
            bucket = table.get(band_key)
            if bucket is None:
                continue
            if isinstance(bucket, int):
                found.append(bucket)
            else:
                found.extend(bucket)
        return np.unique(np.asarray(found, dtype=np.int64))

    def _find_near(self, query: np.ndarray, sketch: tuple[list[int], np.ndarray]) -> Duplicate | None:
        rows = self._candidates(sketch[0])
        if rows.size == 0:
            return None
        self.comparisons += int(rows.size)
        size = query.size
        if size == 0:  # only another empty text matches; it is an exact duplicate, handled by the caller
            return None
        # MinHash agreement first (one byte per value: chance agreement 1/256 only raises it), then the
        # intersection bound of those that could still reach the threshold.
        agree = np.count_nonzero(self._signatures[rows] == sketch[1], axis=1)
        rows = rows[agree >= self._min_agreement]
        if rows.size == 0:
            return None
        lens = self._len[rows]
        # Upper bound of each candidate's intersection with the query, all candidates at once.
        ends = np.cumsum(lens)
        offsets = ends - lens
        flat = self._flat[np.repeat(self._start[rows] - offsets, lens) + np.arange(int(ends[-1]))]
        marked = query & _MARK_MASK
        self._marks[marked] = True
        hits = np.concatenate(([0], np.cumsum(self._marks[flat & _MARK_MASK], dtype=np.int64)))
        self._marks[marked] = False
        bound = hits[ends] - hits[offsets]
        # bound / (size + len - bound) >= t  <=>  bound * (1 + t) >= t * (size + len)
        possible = np.flatnonzero(bound * (1.0 + self.threshold) >= self.threshold * (size + lens) - 1e-9)
        best: Duplicate | None = None
        for i in possible.tolist():
            start = int(self._start[rows[i]])
            score = jaccard(query, self._flat[start : start + int(lens[i])])
            if score >= self.threshold and (best is None or score > best.similarity):
                best = Duplicate("near", self._keys[rows[i]], score)
        return best

    def add(self, text: str, key: str, near: bool = True) -> Duplicate | None:
        """Store ``text`` under ``key`` unless it duplicates a stored text; returns the duplicate, else ``None``.

        ``near=False`` checks exact duplicates only (the text is still indexed for later near checks).
        """
        if key in self._row_of:
            raise KeyError(f"key {key!r} is already in the index")
        normalized = normalize_text(text)
        hit = self._exact.get(normalized)
        if hit is not None:
            return Duplicate("exact", hit, 1.0)
        query = shingles(normalized, self.ngram).astype(np.uint32)
        sketch = self._sketch(query)
        if near:
            duplicate = self._find_near(query, sketch)
            if duplicate is not None:
                return duplicate
        self._store(normalized, key, query, sketch)
        return None

    def _store(self, normalized: str, key: str, query: np.ndarray, sketch: tuple[list[int], np.ndarray]) -> None:
        row = len(self._keys)
        if row == self._start.size:
            self._start = np.concatenate([self._start, np.zeros_like(self._start)])
            self._len = np.concatenate([self._len, np.zeros_like(self._len)])
            self._signatures = np.concatenate([self._signatures, np.zeros_like(self._signatures)])
        self._signatures[row] = sketch[1]
        while self._used + query.size > self._flat.size:
            self._flat = np.concatenate([self._flat, np.zeros_like(self._flat)])
        self._flat[self._used : self._used + query.size] = query
        self._start[row] = self._used
        self._len[row] = query.size
        self._used += query.size
        self._keys.append(key)
        self._row_of[key] = row
        self._exact[normalized] = key
        limit = self.bucket_size
        for table, band_key in zip(self._buckets, sketch[0], strict=True):
            bucket = table.get(band_key)
            if bucket is None:
                table[band_key] = row
            elif isinstance(bucket, int) and (limit is None or limit > 1):
                table[band_key] = [bucket, row]
            elif isinstance(bucket, list) and (limit is None or len(bucket) < limit):
                bucket.append(row)
            else:
                self.full_buckets_skipped += 1

    def candidate_probability(self, jaccard_value: float) -> float:
        """Probability that a pair with this Jaccard shares at least one bucket (the LSH S-curve)."""
        return 1.0 - (1.0 - jaccard_value**self.rows) ** self.bands


def is_near_duplicate(text_a: str, text_b: str, threshold: float, ngram: int = 5) -> bool:
    """Whether two raw texts are exact or near duplicates under :class:`DedupIndex`'s rules."""
    norm_a, norm_b = normalize_text(text_a), normalize_text(text_b)
    if norm_a == norm_b:
        return True
    return jaccard(shingles(norm_a, ngram), shingles(norm_b, ngram)) >= threshold
