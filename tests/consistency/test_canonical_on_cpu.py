"""The in-process canonical fast path: equal keys must mean equal answers, and common forms must meet."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from coact_verl.consistency import canonicalize, numbers_equal


@pytest.mark.parametrize(
    "forms",
    [
        ["0.5", "\\frac{1}{2}", "\\frac12", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "1/2", "x = 0.5", "0.50"],
        ["18000", "18,000", "18{,}000", "\\$18,000", "18000.0", "n = 18000"],
        ["-\\frac{3}{4}", "\\frac{-3}{4}", "-3/4", "-0.75"],
        ["90", "90^\\circ", "90^{\\circ}", "90°", "90 \\text{ degrees}"],
        ["12", "12\\text{ cm}^2", "12 \\mbox{ inches}^2"],
        ["(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\dfrac{\\pi}{2})"],
        ["Evelyn", "\\text{Evelyn}", "\\textbf{Evelyn}"],
        ["\\sqrt{2}/2", "\\sqrt2/2", "\\sqrt{2} / 2"],
    ],
)
def test_equivalent_notations_share_one_key(forms):
    keys = {canonicalize(f).key for f in forms}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1,2", "12"),  # a list, not a thousands separator
        ("\\frac{1}{3}", "0.33"),
        ("\\pi r", "\\pir"),  # a space between command and letter is meaningful
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 12 \\end{pmatrix}"),
        ("(1,2)", "[1,2]"),
        ("3", "-3"),
        ("x = 3", "x = 3, y = 4"),
    ],
)
def test_different_answers_get_different_keys(a, b):
    assert canonicalize(a).key != canonicalize(b).key


def test_numbers_are_exact_fractions():
    c = canonicalize("\\frac{6}{8}")
    assert c.value == Fraction(3, 4) and not c.inexact and c.key == ("num", Fraction(3, 4))
    assert canonicalize("0.750").value == Fraction(3, 4) and canonicalize("0.750").inexact
    assert canonicalize("\\frac{1}{0}").value is None  # division by zero stays text


def test_decimals_compare_like_math_verify():
    third = canonicalize("\\frac{1}{3}")
    assert numbers_equal(third, canonicalize("0.333333"))  # rounded to 6 places
    assert not numbers_equal(third, canonicalize("0.33"))
    assert not numbers_equal(canonicalize("1"), canonicalize("\\frac{1000001}{1000000}"))  # exact values differ


def test_numeric_task_reads_scientific_notation_and_uses_relative_tolerance():
    a = canonicalize("3 \\times 10^{8}\\text{ m/s}", "numeric")
    b = canonicalize("2.99e8", "numeric")
    assert a.value == 300_000_000
    assert numbers_equal(a, b, rel_tol=1e-2)
    assert not numbers_equal(a, b, rel_tol=1e-4)
    assert canonicalize("3e8", "math").value is None  # only the numeric task reads ``e`` notation


@pytest.mark.parametrize(
    ("policy", "expected"), [("strip", Fraction(10)), ("fraction", Fraction(1, 10)), ("keep", None)]
)
def test_percent_policy(policy, expected):
    c = canonicalize("10\\%", percent=policy)
    assert c.value == expected
    if policy == "keep":
        assert c.key == ("str", "10\\%")


def test_huge_values_stay_bounded():
    start = time.perf_counter()
    c = canonicalize("1e999999999", "numeric")
    assert c.value is None  # a 10**999999999 Fraction would not fit in memory
    canonicalize("9" * 150 + "/" + "7" * 150)
    canonicalize("x" * 50_000)
    assert time.perf_counter() - start < 0.5


def test_errors_are_clear():
    with pytest.raises(TypeError):
        canonicalize(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percent"):
        canonicalize("1", percent="round")
    with pytest.raises(ValueError):
        numbers_equal(canonicalize("x"), canonicalize("1"))


def test_equal_keys_agree_with_math_verify(reference_data):
    """Every key collision among MATH-500 gold answers and their rewrites is an equivalence for math-verify."""
    from math_verify import parse, verify

    golds = [r["answer"].rsplit("The answer is: ", 1)[1].strip() for r in reference_data("math500/test.jsonl")]
    rewrites = []
    for g in golds[:120]:
        rewrites += [g, g.replace("\\frac", "\\dfrac"), f"x = {g}" if "=" not in g else g, g.replace(" ", "  ")]
    by_key: dict = {}
    for answer in rewrites:
        by_key.setdefault(canonicalize(answer).key, []).append(answer)
    checked = unparsed = 0
    for answers in by_key.values():
        first = parse("\\boxed{" + answers[0] + "}", parsing_timeout=None)
        for other in dict.fromkeys(answers[1:]):
            if other == answers[0]:
                continue
            second = parse("\\boxed{" + other + "}", parsing_timeout=None)
            if not first or not second or isinstance(first[0], str) or isinstance(second[0], str):
                unparsed += 1  # math-verify cannot read one side (e.g. ``x = \text{Evelyn}``): nothing to compare
                continue
            assert verify(first, second, timeout_seconds=None), (answers[0], other)
            checked += 1
    # ``x = <expr>`` shares a key with ``<expr>`` only when ``<expr>`` is a number (``y = 2x + 1`` stays an equation).
    assert checked > 80 and unparsed < checked / 10
