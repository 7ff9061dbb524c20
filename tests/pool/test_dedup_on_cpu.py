"""Exact and near-duplicate detection, checked against brute force on real GSM8K questions."""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from coact_verl.pool import DedupIndex, PromptPool, is_near_duplicate, normalize_text, shingles, similarity
from coact_verl.pool.dedup import choose_bands, jaccard

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def gsm8k_questions(split: str = "train", limit: int | None = None) -> list[str]:
    path = DATA / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        pytest.skip(f"reference data not found: {path} (expected the shared data folder next to the repo)")
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line)["question"] for line in itertools.islice(handle, limit)]
    return rows


def test_normalize_ignores_case_whitespace_and_sentence_punctuation():
    a = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
    b = "  natalia SOLD clips to 48 of her friends in april;\n\n how many clips, did she sell  "
    expected = "natalia sold clips to 48 of her friends in april how many clips did she sell"
    assert normalize_text(a) == normalize_text(b) == expected


def test_normalize_keeps_what_changes_the_problem():
    assert normalize_text("It costs $1,000.") == normalize_text("it costs $1000")
    assert normalize_text("He ran 3.5 km.") == "he ran 3.5 km"
    assert normalize_text("3.5") != normalize_text("35")
    assert normalize_text("Solve x+1 = 2.") != normalize_text("Solve x-1 = 2.")
    assert normalize_text("Compute 2/3 of 9") != normalize_text("Compute 2*3 of 9")
    assert normalize_text("“Quoted” — text…") == "quoted text"


def test_shingles_and_similarity():
    assert shingles("").size == 0
    assert shingles("abc", 5).size == 1  # shorter than one n-gram: the whole text
    assert shingles("abcdefg", 5).size == 3
    assert similarity("The same text.", "the same   TEXT") == 1.0
    assert similarity("Ava has 3 apples.", "Completely different words here") < 0.1
    assert jaccard(shingles("aaaaaa"), shingles("aaaaaa")) == 1.0


def test_choose_bands_meets_the_recall_target():
    for threshold in (0.6, 0.7, 0.8, 0.9):
        bands, rows = choose_bands(threshold, 64)
        assert bands * rows <= 64
        assert 1 - (1 - threshold**rows) ** bands >= 0.99
        assert 1 - (1 - threshold ** (rows + 1)) ** (64 // (rows + 1)) < 0.99  # rows is the largest that does


def test_exact_and_near_duplicates_are_reported():
    index = DedupIndex(threshold=0.8)
    seed = gsm8k_questions(limit=1)[0]
    assert index.add(seed, "seed") is None
    assert "seed" in index and len(index) == 1
    spaced = "  " + "   ".join(seed.upper().split()) + "  "
    dup = index.find(spaced)
    assert dup is not None and (dup.kind, dup.key, dup.similarity) == ("exact", "seed", 1.0)
    near = seed.replace("48", "52")
    dup = index.find(near)
    assert dup is not None and dup.kind == "near" and dup.key == "seed" and 0.8 <= dup.similarity < 1.0
    assert index.add(near, "copy") == dup and "copy" not in index
    assert index.find("Ben has 3 pens and gets 4 more. How many pens does Ben have?") is None
    assert index.find(near, near=False) is None  # exact-only lookup
    with pytest.raises(KeyError):
        index.add("another text", "seed")


def test_exact_only_add_still_indexes_for_later_near_checks():
    index = DedupIndex(threshold=0.8)
    q = gsm8k_questions(limit=1)[0]
    assert index.add(q, "a", near=False) is None
    assert index.add(q.replace("48", "52"), "b", near=False) is None  # near-duplicate allowed when asked
    assert index.find(q.replace("48", "60")).kind == "near"


def test_index_agrees_with_brute_force_on_real_questions():
    """Every pair at or above the threshold is found; nothing below it is reported."""
    questions = gsm8k_questions(limit=400)
    variants = [q.replace(" the ", " a ", 1).replace("?", "? ", 1) + " Explain." for q in questions[:80]]
    threshold = 0.8
    index = DedupIndex(threshold=threshold)
    stored: list[tuple[str, object]] = []
    for i, text in enumerate([*questions, *variants]):
        sh = shingles(normalize_text(text))
        best = max((jaccard(sh, other) for _, other in stored), default=0.0)
        dup = index.add(text, str(i))
        if best >= threshold:
            assert dup is not None and dup.similarity == pytest.approx(best), text
        else:
            assert dup is None, (text, dup)
            stored.append((str(i), sh))
    assert len(index) == len(stored)
    assert len(index) < len(questions) + len(variants)  # the variants were caught


def test_is_near_duplicate():
    q = gsm8k_questions(limit=1)[0]
    assert is_near_duplicate(q, q.lower(), 0.99)
    assert is_near_duplicate(q, q.replace("48", "52"), 0.8)
    assert not is_near_duplicate(q, "What is 2 + 2?", 0.8)


def test_rebuilt_index_makes_the_same_decisions():
    questions = gsm8k_questions(limit=300)
    a, b = DedupIndex(0.8), DedupIndex(0.8)
    for i, q in enumerate(questions):
        a.add(q, str(i))
        b.add(q, str(i))
    probes = [q.replace("a", "e", 2) for q in questions[::7]]
    assert [a.find(p) for p in probes] == [b.find(p) for p in probes]


def test_adding_5000_prompts_is_fast_and_not_quadratic():
    questions = gsm8k_questions(limit=5000)
    assert len(questions) == 5000
    pool = PromptPool()
    start = time.perf_counter()
    added = sum(pool.add(q, "gsm8k") for q in questions)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"adding 5,000 prompts took {elapsed:.2f} s"
    assert added >= 4990  # GSM8K train holds a couple of near-identical pairs
    assert added + pool.rejected["exact"] + pool.rejected["near"] == 5000
    # Brute force would compare ~12.5 M pairs; the LSH candidates are a tiny fraction of that.
    assert pool._dedup.comparisons < 5 * len(questions)


# ---------------------------------------------------------------------- template-generated questions at scale


def load_bench():
    """The dedup benchmark's stream of template-generated questions with planted near-duplicates."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dedup.py"
    spec = importlib.util.spec_from_file_location("bench_dedup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bounded_index_decides_like_brute_force_on_template_siblings():
    """Few templates, so every family's common bands overflow their buckets: still no false reject, and the
    near-duplicates that brute force finds (planted ones and siblings that landed above the threshold) are
    found; distinct siblings below the threshold are all kept."""
    stream = load_bench().template_stream(500, templates=2, plant_every=5)
    index = DedupIndex(threshold=0.8, bucket_size=8)
    stored: list[tuple[str, np.ndarray]] = []
    should_reject = found = kept_below = 0
    for i, (text, _) in enumerate(stream):
        sh = shingles(normalize_text(text))
        scores = [jaccard(sh, other) for _, other in stored]
        best = max(scores, default=0.0)
        dup = index.add(text, str(i))
        if dup is not None:
            assert dup.kind == "near" and best >= 0.8, (text, dup, best)  # never a false reject
            assert dup.similarity == pytest.approx(best), text
            found += 1
        else:
            stored.append((str(i), sh))
        if best >= 0.8:
            should_reject += 1
        else:
            assert dup is None
            kept_below += 1
    assert index.full_buckets_skipped > 0  # the bound was exercised
    assert kept_below > 250 and should_reject > 60
    assert found / should_reject >= 0.97, (found, should_reject)


def test_recall_of_planted_near_duplicates_stays_with_the_unbounded_index():
    stream = load_bench().template_stream(3000, templates=5, plant_every=5)
    recall = {}
    for size in (32, None):
        index = DedupIndex(bucket_size=size)
        stored: set[int] = set()
        planted = caught = 0
        for i, (text, source) in enumerate(stream):
            dup = index.add(text, str(i))
            if dup is None:
                stored.add(i)
            if source is not None and source in stored:
                planted += 1
                caught += dup is not None
        assert planted > 250
        recall[size] = caught / planted
    assert recall[None] >= 0.99
    assert recall[32] >= recall[None] - 0.02, recall


def test_candidates_per_query_are_bounded():
    stream = load_bench().template_stream(1200, templates=2, plant_every=1000)
    bounded, unbounded = DedupIndex(bucket_size=8), DedupIndex(bucket_size=None)
    most = {id(bounded): 0, id(unbounded): 0}
    for i, (text, _) in enumerate(stream):
        for index in (bounded, unbounded):
            before = index.comparisons
            index.add(text, str(i))
            most[id(index)] = max(most[id(index)], index.comparisons - before)
    assert most[id(bounded)] <= bounded.bands * 8
    assert most[id(unbounded)] > 4 * bounded.bands * 8  # without the bound, template siblings pile up
    assert all(isinstance(b, int) or len(b) <= 8 for table in bounded._buckets for b in table.values())
    assert bounded.full_buckets_skipped > 0
    with pytest.raises(ValueError):
        DedupIndex(bucket_size=0)


def test_adding_template_questions_does_not_slow_down():
    """Candidates per add level off at the bucket bound instead of growing with the pool (the cost proxy)."""
    stream = load_bench().template_stream(6000, templates=6, plant_every=20)
    index = DedupIndex()
    per_add = []
    for i, (text, _) in enumerate(stream):
        index.add(text, str(i))
        if (i + 1) % 1500 == 0:
            per_add.append(index.comparisons / (i + 1))
    assert per_add[-1] <= index.bands * index.bucket_size
    assert per_add[-1] < 2.0 * per_add[1], per_add  # 3,000 -> 6,000 texts: far from doubling
