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
O(L + num_perm·S) to normalise, shingle and sign (vectorised), ``bands`` dictionary look-ups, and O(L) per
candidate for the exact check. Unrelated texts rarely share a bucket (probability ≈ bands·J^rows for Jaccard
J), so adding N texts costs O(N) expected time, not O(N²). Memory per stored text: its normalised form plus
one integer bucket key per band.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

# Characters kept by the normaliser although Unicode calls them punctuation: they change a problem's meaning.
_MATH_PUNCT = set("-/*()[]{}\\%#&@_")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_WHITESPACE = re.compile(r"\s+")
_POINT = "\x00"  # placeholder for a decimal point while other dots are removed
_MASK64 = (1 << 64) - 1
_BASE = np.uint64(1_000_003)


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


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def choose_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)`` with the largest ``rows`` such that 1 - (1 - t^rows)^bands ≥ ``recall`` at t = threshold."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


@dataclass(frozen=True)
class Duplicate:
    """A stored text that a query duplicates: ``kind`` is ``exact`` or ``near``; ``similarity`` in [0, 1]."""

    kind: str
    key: str
    similarity: float


class DedupIndex:
    """Exact + MinHash-LSH near-duplicate index over texts, each stored under a string key.

    Args:
        threshold: character n-gram Jaccard at or above which two texts are near-duplicates, in (0, 1].
        ngram: characters per shingle.
        num_perm: MinHash values per text.
        seed: seed of the MinHash hash family (fixed, so an index rebuilt from the same texts is identical).
    """

    def __init__(self, threshold: float = 0.8, ngram: int = 5, num_perm: int = 64, seed: int = 0) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if ngram < 1 or num_perm < 1:
            raise ValueError("ngram and num_perm must be >= 1")
        self.threshold = threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        self.bands, self.rows = choose_bands(threshold, num_perm)
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._band_mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._exact: dict[str, str] = {}
        self._normalized: dict[str, str] = {}
        self._buckets: list[dict[int, str | list[str]]] = [{} for _ in range(self.bands)]
        self.comparisons = 0  # exact Jaccard checks of LSH candidates so far (the near-duplicate search cost)

    def __len__(self) -> int:
        return len(self._normalized)

    def __contains__(self, key: object) -> bool:
        return key in self._normalized

    def signature(self, shingle_hashes: np.ndarray) -> np.ndarray:
        """MinHash signature of a shingle array, shape ``(num_perm,)`` (all ones-bits for an empty text)."""
        if shingle_hashes.size == 0:
            return np.full(self.num_perm, _MASK64, dtype=np.uint64)
        x = shingle_hashes[None, :]
        return ((self._a[:, None] * x + self._b[:, None]) >> np.uint64(32)).min(axis=1)

    def _band_keys(self, shingle_hashes: np.ndarray) -> list[int]:
        sig = self.signature(shingle_hashes)[: self.bands * self.rows].reshape(self.bands, self.rows)
        return (sig * self._band_mix[None, :]).sum(axis=1, dtype=np.uint64).tolist()

    def find(self, text: str, near: bool = True) -> Duplicate | None:
        """The first stored text that ``text`` duplicates (exact first, then the most similar near one)."""
        normalized = normalize_text(text)
        hit = self._exact.get(normalized)
        if hit is not None:
            return Duplicate("exact", hit, 1.0)
        if not near:
            return None
        return self._find_near(shingles(normalized, self.ngram))[0]

    def _find_near(self, query: np.ndarray) -> tuple[Duplicate | None, list[int]]:
        keys = self._band_keys(query)
        candidates: dict[str, None] = {}
        for table, band_key in zip(self._buckets, keys, strict=True):
            found = table.get(band_key)
            if found is None:
                continue
            for key in [found] if isinstance(found, str) else found:
                candidates[key] = None
        best: Duplicate | None = None
        self.comparisons += len(candidates)
        for key in candidates:
            score = jaccard(query, shingles(self._normalized[key], self.ngram))
            if score >= self.threshold and (best is None or score > best.similarity):
                best = Duplicate("near", key, score)
        return best, keys

    def add(self, text: str, key: str, near: bool = True) -> Duplicate | None:
        """Store ``text`` under ``key`` unless it duplicates a stored text; returns the duplicate, else ``None``.

        ``near=False`` checks exact duplicates only (the text is still indexed for later near checks).
        """
        if key in self._normalized:
            raise KeyError(f"key {key!r} is already in the index")
        normalized = normalize_text(text)
        hit = self._exact.get(normalized)
        if hit is not None:
            return Duplicate("exact", hit, 1.0)
        query = shingles(normalized, self.ngram)
        if near:
            duplicate, keys = self._find_near(query)
            if duplicate is not None:
                return duplicate
        else:
            keys = self._band_keys(query)
        self._exact[normalized] = key
        self._normalized[key] = normalized
        for table, band_key in zip(self._buckets, keys, strict=True):
            found = table.get(band_key)
            if found is None:
                table[band_key] = key
            elif isinstance(found, str):
                table[band_key] = [found, key]
            else:
                found.append(key)
        return None

    def candidate_probability(self, jaccard_value: float) -> float:
        """Probability that a pair with this Jaccard shares at least one bucket (the LSH S-curve)."""
        return 1.0 - (1.0 - jaccard_value**self.rows) ** self.bands


def is_near_duplicate(text_a: str, text_b: str, threshold: float, ngram: int = 5) -> bool:
    """Whether two raw texts are exact or near duplicates under :class:`DedupIndex`'s rules."""
    norm_a, norm_b = normalize_text(text_a), normalize_text(text_b)
    if norm_a == norm_b:
        return True
    return jaccard(shingles(norm_a, ngram), shingles(norm_b, ngram)) >= threshold
