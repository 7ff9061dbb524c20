"""Backends and gold files, without a server."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coact_verl.oracle.backends import (
    AnnotatorPool,
    Candidate,
    GoldBackend,
    LabelQuery,
    SimulatedBackend,
    exact_or_numeric,
    resolve_equivalence,
)
from coact_verl.oracle.backends.human import HumanBackend
from coact_verl.oracle.service.gold_io import load_gold_file


def _query(answers, gold="42", key="k"):
    cands = tuple(Candidate(a, f"resp {a}", votes=i + 1) for i, a in enumerate(answers))
    return LabelQuery(1, key, "p", "q", "gsm8k", 0, cands, gold)


def test_exact_or_numeric():
    assert exact_or_numeric("1,000", "1000")
    assert exact_or_numeric("$12.50", "12.5")
    assert exact_or_numeric(" 3. ", "3")
    assert exact_or_numeric("Yes", "yes")
    assert not exact_or_numeric("12", "13")
    assert not exact_or_numeric("x+1", "x+2")


async def test_gold_backend_with_injected_equivalence():
    calls = []

    def same(a, b):
        calls.append((a, b))
        return a.strip() == b.strip()

    backend = GoldBackend(equivalent=same)
    result = await backend.label(_query(["42", " 42", "41", None]))
    assert result.correct == (True, True, False, False)  # no answer → incorrect
    assert result.answer == " 42"  # the most-voted correct candidate; never the gold text itself
    assert result.source == "gold"
    assert sorted(calls) == [("42", " 42"), ("42", "41"), ("42", "42")]  # (reference, answer), each answer once


async def test_gold_backend_extracts_missing_answers_when_given_an_extractor():
    backend = GoldBackend(equivalent=exact_or_numeric, extract=lambda text, task: text.split()[-1])
    result = await backend.label(_query([None, "1"]))
    assert result.correct == (False, False)  # "resp None" → "None" ≠ 42
    backend = GoldBackend(equivalent=exact_or_numeric, extract=lambda text, task: "42")
    assert (await backend.label(_query([None]))).correct == (True,)


async def test_default_gold_backend_decides_what_it_can_in_process_and_leaves_the_rest_to_math_verify():
    backend = GoldBackend()  # the default equivalence: canonical forms and numbers here, math-verify in a pool
    assert backend.inline  # labels inside the charging transaction when it can
    numbers = backend.label_now(_query(["42.0", "$42", "41"]))
    assert numbers is not None and numbers.correct == (True, True, False)
    symbolic = _query(["(x+1)^2", "x^2+2x+2"], gold="x^2+2x+1")
    assert backend.label_now(symbolic) is None  # needs math-verify: not decided on the caller's thread
    assert (await backend.label(symbolic)).correct == (True, False)  # the pool decides it, in a worker thread
    assert not GoldBackend(offload=True).inline  # two-phase: every check after the charge
    await backend.aclose()


async def test_gold_backend_needs_gold():
    with pytest.raises(ValueError):
        await GoldBackend(equivalent=exact_or_numeric).label(_query(["1"], gold=None))


def test_pool_is_seeded_and_order_independent():
    truth = [True, False, True, False]
    a = AnnotatorPool(size=5, flip_rate=0.3, flip_spread=0.1, seed=7)
    b = AnnotatorPool(size=5, flip_rate=0.3, flip_spread=0.1, seed=7)
    keys = [f"q{i}" for i in range(50)]
    forward = [a.judge(k, truth) for k in keys]
    backward = [b.judge(k, truth) for k in reversed(keys)][::-1]
    assert forward == backward
    assert a.annotators == b.annotators
    other = AnnotatorPool(size=5, flip_rate=0.3, flip_spread=0.1, seed=8)
    assert [other.judge(k, truth) for k in keys] != forward


def test_pool_flip_rate_matches():
    pool = AnnotatorPool(size=13, flip_rate=0.25, seed=0)
    truth = [True, False] * 4
    flips = total = 0
    for i in range(1000):
        _, verdicts = pool.judge(f"key{i}", truth)
        flips += sum(v != t for v, t in zip(verdicts, truth, strict=True))
        total += len(truth)
    assert 0.23 < flips / total < 0.27
    _, clean = AnnotatorPool(flip_rate=0.0).judge("x", truth)
    assert clean == tuple(truth)


def test_pool_position_bias_marks_first_candidate():
    pool = AnnotatorPool(size=3, flip_rate=0.0, position_bias=1.0)
    for i in range(20):
        _, verdicts = pool.judge(f"k{i}", [False, False, None])
        assert verdicts == (True, False, None)
    with pytest.raises(ValueError):
        AnnotatorPool(flip_rate=1.5)


async def test_simulated_backend_labels_with_noise():
    clean = SimulatedBackend(AnnotatorPool(flip_rate=0.0), equivalent=exact_or_numeric)
    result = await clean.label(_query(["42", "41"]))
    assert result.correct == (True, False) and result.source == "simulated"
    assert result.annotator.startswith("sim-")
    noisy = SimulatedBackend(AnnotatorPool(flip_rate=1.0), equivalent=exact_or_numeric)
    result = await noisy.label(_query(["42", "41"]))
    assert result.correct == (False, True) and result.answer == "41"


def test_human_verdict():
    human = HumanBackend(equivalent=exact_or_numeric)
    cands = [Candidate("3", "r"), Candidate("4", "r"), Candidate(None, "r")]
    marked = human.verdict(cands, "gsm8k", [1], None, "human-1")
    assert marked.correct == (False, True, False) and marked.answer == "4"
    typed = human.verdict(cands, "gsm8k", None, " 3.0 ", "human-1")
    assert typed.correct == (True, False, False) and typed.answer == "3.0"
    none = human.verdict(cands, "gsm8k", [], None, "human-1")
    assert none.correct == (False, False, False) and none.answer is None
    with pytest.raises(ValueError):
        human.verdict(cands, "gsm8k", [3], None, "human-1")


def test_resolve_equivalence():
    assert resolve_equivalence("consistency") is None
    assert resolve_equivalence("exact") is exact_or_numeric
    assert resolve_equivalence("coact_verl.oracle.backends.gold:exact_or_numeric") is exact_or_numeric
    with pytest.raises(ValueError):
        resolve_equivalence("nonsense")


def test_load_gold_files(tmp_path):
    jl = tmp_path / "g.jsonl"
    jl.write_text(json.dumps({"prompt_id": "a", "answer": 3}) + "\n\n" + json.dumps({"prompt_id": "b", "answer": "x"}))
    assert load_gold_file(jl) == {"a": "3", "b": "x"}
    pqf = tmp_path / "g.parquet"
    pq.write_table(pa.table({"prompt_id": ["a", "b"], "answer": ["1/2", None], "other": [1, 2]}), pqf)
    assert load_gold_file(pqf) == {"a": "1/2"}
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"id": "a"}))
    with pytest.raises(ValueError):
        load_gold_file(bad)
    with pytest.raises(ValueError):
        load_gold_file(tmp_path / "g.csv")


def test_backends_come_from_a_registry(monkeypatch):
    """Built-in backends are registered by name (the names the trainer config accepts); a new one is registered
    with a decorator and built by name; duplicate and unknown names are refused."""
    from coact_verl.config import ORACLE_BACKENDS
    from coact_verl.oracle import backends
    from coact_verl.oracle.service.settings import OracleSettings

    assert set(backends.BACKENDS) == set(ORACLE_BACKENDS) == set(backends.BACKEND_NAMES)
    assert isinstance(backends.make_backend(OracleSettings(backend="gold")), GoldBackend)
    assert isinstance(backends.make_backend(OracleSettings(backend="human")), HumanBackend)
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))

    @backends.register_backend("always_right")
    def always_right(settings):
        return GoldBackend(equivalent=lambda answer, reference: True)

    built = backends.make_backend(OracleSettings(backend="always_right"))
    assert isinstance(built, GoldBackend) and built.label_now(_query(["1", "2"])).correct == (True, True)
    with pytest.raises(ValueError, match="already registered"):
        backends.register_backend("gold")(always_right)
    with pytest.raises(ValueError, match="unknown oracle backend 'nope'"):
        backends.make_backend(OracleSettings(backend="nope"))
