"""The numeric evaluator may only ever prove answers *different*; it must never contradict math-verify."""

from __future__ import annotations

import random
import re

import pytest

from coact_verl.consistency import canonicalize, normalize_latex
from coact_verl.consistency.evaluate import approximate, definitely_different


def _a(text: str):
    return approximate(normalize_latex(text))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("3\\sqrt{13}", "3\\sqrt{14}"),
        ("-13x+3", "-13x+4"),
        ("x^2+2x+1", "(x+1)^3"),
        ("(1,-16,-4,43)", "(1,-16,-4,44)"),
        ("(2,\\infty)", "(3,\\infty)"),
        ("(-\\infty,2)\\cup(3,\\infty)", "(-\\infty,2)\\cup(4,\\infty)"),
        ("3, 5, 7", "3, 5, 9"),
        ("\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "\\begin{pmatrix} -7 \\\\ 16 \\\\ 6 \\end{pmatrix}"),
        ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}"),
        ("(1,2)", "(1,2,3)"),
    ],
)
def test_proves_different(a, b):
    assert definitely_different(_a(a), _a(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("3, 5, 7", "7, 5, 3"),
        ("(0,9)\\cup(9,36)", "(9,36)\\cup(0,9)"),
        ("\\frac{\\sqrt{3}}{2}", "0.866025"),  # math-verify rounds decimals to 6 places
        ("(1,2)", "[1,2]"),  # different shapes: no claim
        ("A", "a"),  # math-verify lower-cases names
    ],
)
def test_makes_no_claim(a, b):
    ea, eb = _a(a), _a(b)
    assert ea is None or eb is None or not definitely_different(ea, eb)


@pytest.mark.parametrize(
    "text",
    [
        "2\\frac{1}{2}",  # a mixed number for math-verify (5/2), a product for LaTeX
        "2 3",
        "x^23",
        "e^{i\\pi}",
        "6-5i",
        "\\text{Evelyn}",
        "\\Gamma(5)",
        "3\\pm 2\\sqrt{2}",
        "x \\in [-2,7]",
        "52_8",
        "(3,1]",  # an empty interval for math-verify
        "(0,2)\\cup(1,3)",  # overlapping parts: not a unique form
        "\\sqrt{-1}",
        "10^{100}",
        "\\frac{1}{0}",
        "\\begin{vmatrix} 1 & 2 \\\\ 3 & 4 \\end{vmatrix}",  # a determinant
        "x" * 400,
        "{" * 200 + "1" + "}" * 200,
    ],
)
def test_declines_what_math_verify_reads_differently(text):
    assert _a(text) is None


def _variants(gold: str, rng: random.Random) -> list[str]:
    out = [gold.replace("\\frac", "\\dfrac"), re.sub(r"\s+", "", gold), gold.replace(",", ", ")]
    digits = [i for i, ch in enumerate(gold) if ch.isdigit()]
    if digits:
        i = rng.choice(digits)
        out.append(gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1 :])
    parts = gold.split(",")
    if len(parts) > 1 and not any(ch in gold for ch in "()[]\\"):
        out.append(",".join(reversed(parts)))
    value = _a(gold)
    if value is not None and value.kind == "scalar":  # decimals: 6 places meet math-verify's rounding, 3 do not
        out += [f"{value.values[0]:.6f}", f"{value.values[0]:.3f}"]
    return out


def test_never_contradicts_math_verify_on_math500_answers(reference_data):
    """Every pair the evaluator calls different, among MATH-500 answers and their rewrites, math-verify rejects."""
    from math_verify import parse, verify

    rng = random.Random(0)
    golds = [r["answer"].rsplit("The answer is: ", 1)[1].strip() for r in reference_data("math500/test.jsonl")]
    golds = [g for g in golds if canonicalize(g).value is None]  # symbolic answers; numbers never get here
    claims = checked = 0
    for gold in golds:
        for variant in _variants(gold, rng) + [rng.choice(golds)]:
            ea, eb = _a(gold), _a(variant)
            if ea is None or eb is None or not definitely_different(ea, eb):
                continue
            claims += 1
            pa = parse("\\boxed{" + gold + "}", parsing_timeout=None)
            pb = parse("\\boxed{" + variant + "}", parsing_timeout=None)
            if pa and pb and not isinstance(pa[0], str) and not isinstance(pb[0], str):
                assert not verify(pa, pb, timeout_seconds=None), (gold, variant)
                checked += 1
    print(f"evaluator claims checked against math-verify: {checked} of {claims}")
    assert checked >= 110  # observed 117
