"""Equivalence-aware clustering with math-verify in worker processes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency import AnswerClusterer

EQUIVALENT = [
    ("0.5", "\\frac12"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("(1,2]", "\\left( 1, 2 \\right]"),
    ("x=3", "3"),
    ("\\sqrt2/2", "\\frac{\\sqrt{2}}{2}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("\\frac{\\sqrt{3}}{2}", "0.866025"),  # a decimal rounded to 6 places
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("3, 5, 7", "7, 5, 3"),
]
DIFFERENT = [
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{4}}{2}"),
    ("\\frac{\\sqrt{3}}{2}", "0.866"),
    ("x \\in [-2,7]", "x \\in [-2,8]"),  # unevaluated relations must not collapse to ``False == False``
    ("(1,2)", "(2,1)"),
    ("[1,2]", "(1,2)"),
    ("x^2+2x+1", "(x+1)^3"),
    ("\\text{Evelyn}", "\\text{Bob}"),
    ("2", "\\sqrt{2}"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_answers(clusterer, a, b):
    assert clusterer.same(a, b)
    assert clusterer.cluster([a, b]) == [0, 0]


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_answers(clusterer, a, b):
    assert not clusterer.same(a, b)
    assert clusterer.cluster([a, b]) == [0, 1]


def test_same_many_matches_same(clusterer):
    pairs = EQUIVALENT + DIFFERENT + [(None, "1"), ("1", None)]
    expected = [True] * len(EQUIVALENT) + [False] * (len(DIFFERENT) + 2)
    assert clusterer.same_many(pairs) == expected


def test_cluster_ids_are_ordered_by_size_then_first_appearance(clusterer):
    answers = ["9", "\\frac{\\sqrt2}{2}", None, "\\frac{1}{\\sqrt{2}}", "7", "\\sqrt{2}/2", "x = 7", "7.0", "7"]
    assert clusterer.cluster(answers) == [2, 1, -1, 1, 0, 1, 0, 0, 0]  # sizes 4 (7), 3 (sqrt 2 / 2), 1 (9)
    answers = ["7", "\\frac{\\sqrt2}{2}", None, "\\frac{1}{\\sqrt{2}}", "7.0", "\\sqrt{2}/2", "x = 7", "9"]
    assert clusterer.cluster(answers) == [0, 1, -1, 1, 0, 1, 0, 2]  # 3-3 tie: "7" appears first
    # A 2-2 tie goes to the cluster that appears first, whatever its form.
    assert clusterer.cluster(["b", "a", "a", "b"]) == [0, 1, 1, 0]
    assert clusterer.cluster(["a", "b", "b", "a"]) == [0, 1, 1, 0]
    assert clusterer.cluster([None, None]) == [-1, -1]
    assert clusterer.cluster([]) == []


def test_clustering_is_deterministic_and_batching_does_not_change_it(clusterer):
    groups = [
        ["\\frac{1}{2}", "0.5", "1/2", "2", "\\sqrt{4}", None],
        ["(1,2)", "(1, 2)", "\\left(1,2\\right)", "(2,1)", "[1,2]"],
        ["x^2-1", "(x-1)(x+1)", "x^2+1", "x^2-1"],
    ]
    single = [clusterer.cluster(g) for g in groups]
    assert clusterer.cluster_many(groups) == single
    assert clusterer.cluster_many(groups) == single
    assert single[0] == [0, 0, 0, 1, 1, -1]


def test_each_distinct_answer_is_parsed_once(clusterer):
    before = clusterer.stats().get("parses", 0)
    group = ["\\frac{\\pi}{7}", "\\frac{\\pi}{7}", "\\dfrac{\\pi}{7}", "\\frac{2\\pi}{14}", "\\pi/7"]
    first = clusterer.cluster_many([group, group, list(reversed(group))])
    after_first = clusterer.stats()["parses"]
    # ``\frac`` and ``\dfrac`` share a canonical form: 3 distinct forms, each parsed once across the 3 groups.
    assert after_first - before == 3
    assert first[0] == [0, 0, 0, 0, 0]
    assert clusterer.cluster(group) == first[0]
    assert clusterer.stats()["parses"] == after_first  # cached


def test_unanimous_groups_need_no_math_verify(clusterer):
    before = dict(clusterer.stats())
    assert clusterer.cluster(["\\frac{\\sqrt{5}}{11}"] * 16) == [0] * 16
    after = clusterer.stats()
    assert after.get("parses", 0) == before.get("parses", 0)
    assert after.get("verifies", 0) == before.get("verifies", 0)


def test_canonical_only_mode_starts_no_workers(fast_clusterer):
    assert fast_clusterer.cluster(["0.5", "\\frac12", "\\sqrt2/2", "\\frac{1}{\\sqrt2}"]) == [0, 0, 1, 2]
    assert fast_clusterer._pool is None
    assert fast_clusterer.same("18,000", "18000") and not fast_clusterer.same("\\sqrt2/2", "\\frac{1}{\\sqrt2}")


def test_numeric_task_uses_relative_tolerance(clusterer):
    with AnswerClusterer(ConsistencyConfig(task="numeric", use_math_verify=False, numeric_rel_tol=0.02)) as c:
        assert c.cluster(["3e8", "2.99 \\times 10^{8}", "3.1e8", "1.6e-3"]) == [0, 0, 1, 2]
    # Symbolic and numeric forms of one value meet under the tolerance too (here through the evaluator).
    assert clusterer.cluster(["2\\pi", "6.28", "6.4", "\\frac{\\sqrt{2}}{2}"], task="numeric") == [0, 0, 1, 2]
    assert clusterer.cluster(["2\\pi", "6.28"], task="math") == [0, 1]  # math-verify's 6-place rounding


async def test_async_calls_leave_the_event_loop_free(clusterer):
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    groups = [[f"\\frac{{\\sqrt{{{k}}}}}{{{k + 1}}}", f"\\sqrt{{{k}}}/{k + 1}", f"{k}"] for k in range(2, 14)]
    result = await clusterer.acluster_many(groups)
    assert await clusterer.asame("0.5", "\\frac12")
    assert await clusterer.acluster(["1", "1.0"]) == [0, 0]
    done.set()
    await task
    assert all(r[0] == r[1] for r in result)
    assert ticks > 0


def test_bad_input_errors(clusterer):
    with pytest.raises(TypeError):
        clusterer.cluster("0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        clusterer.cluster([0.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="task"):
        clusterer.cluster(["1"], task="chemistry")


def test_a_hanging_math_verify_call_is_killed_and_the_pool_keeps_working():
    """``9^{9^{9^{9}}}`` makes sympy compute a number with 10**369693099 digits: it never returns."""
    config = ConsistencyConfig(task="math", verify_workers=1, verify_timeout_s=1.0)
    with AnswerClusterer(config) as c:
        c.warmup()
        start = time.perf_counter()
        ids = c.cluster(["9^{9^{9^{9}}}", "\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt2}", "3"])
        elapsed = time.perf_counter() - start
        stats = c.stats()
        assert stats["pool_timeouts"] >= 1 and stats["pool_restarts"] >= 1
        assert elapsed < 15.0  # one 1 s timeout plus a worker restart; without the kill this never returns
        # The stuck answer is on its own; the rest of the group is clustered normally.
        assert ids[1] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3
        assert not c.same("9^{9^{9^{9}}}", "3")  # the failure is cached: no second timeout
        assert c.stats()["pool_timeouts"] == stats["pool_timeouts"]
        assert c.same("2\\sqrt{3}", "\\sqrt{12}")  # the replacement worker answers


def test_same_many_now_decides_in_process_and_never_waits():
    """What canonical forms and numbers settle comes back at once; what needs math-verify comes back ``None``;
    and a clusterer busy in another thread (a pool round-trip) is not waited for."""
    clusterer = AnswerClusterer()
    pairs = [("42", "42.0"), ("1,000", "1000"), ("42", "41"), (None, "1"), ("x^2+2x+1", "(x+1)^2")]
    assert clusterer.same_many_now(pairs, "gsm8k") == [True, True, False, False, None]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with clusterer._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    start = time.monotonic()
    assert clusterer.same_many_now(pairs[:1], "gsm8k") is None and time.monotonic() - start < 0.1
    release.set()
    holder.join()
    assert clusterer.same_many_now(pairs[:1], "gsm8k") == [True]
    clusterer.close()
