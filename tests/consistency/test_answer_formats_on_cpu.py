"""Answer formats models write, and equivalence rules that must never merge different answers.

Covers the formats named in the answer-checking issue: free-form final statements, several boxes, thousands
separators, decimal commas, currency, percent words, units, scientific notation, times of day, equations, and
the per-task choice of ordered tuples, unordered sets and intervals with their brackets.
"""

from __future__ import annotations

import pytest

from coact_verl.config import ConsistencyConfig
from coact_verl.consistency import AnswerClusterer, canonicalize, extract_answer


@pytest.mark.parametrize(
    ("text", "task", "expected"),
    [
        # free-form final statements, in order of trust
        ("So we get 5.\nThe final answer is $\\frac{1}{2}$. I hope it is correct.", "math", "\\frac{1}{2}"),
        ("Therefore the result is \\(x^2+1\\).", "math", "x^2+1"),
        ("We find that \\[ 9 \\] is the value.", "math", "9"),
        ("Answer: 42", "math", "42"),
        ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "math", "120"),
        ("the probability is 2/3. <|im_start|>user\nnext question: what is 5?", "math", "2/3"),
        # several boxes form one list answer; repeated boxes count once
        ("\\boxed{1},\\boxed{2},\\boxed{3}", "math", "1, 2, 3"),
        ("The roots are \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}.", "math", "-2, 1"),
        ("So \\boxed{4}. Therefore \\boxed{4}.", "math", "4"),
        ("\\boxed{1} no, wait, that was wrong. The real one is \\boxed{2}", "math", "2"),
        # GSM8K: the result, not the first number after the marker
        ("#### 9*2 = 18", "gsm8k", "18"),
        ("The answer is 3 + 4 = 7", "gsm8k", "7"),
        ("The answer is $1 \\times 10^3$", "gsm8k", "1000"),
        ("#### 3\nwait no\n#### 10", "gsm8k", "10"),
        ("She paid $204 + $160 = $<<204+160=364>>364.", "gsm8k", "364"),
        ("#### 1,234", "gsm8k", "1234"),
        ("#### 1 234", "gsm8k", "1234"),
        ("#### 1\u2009234", "gsm8k", "1234"),
        ("#### 1'234", "gsm8k", "1234"),
        ("The answer is 12,5 kg", "gsm8k", "12.5"),
        # numbers with units and currency
        ("the number is not 10 which is 1,000.99€", "numeric", "1000.99"),
        ("The speed is 1,500 m/s.", "numeric", "1500"),
        ("1 000", "numeric", "1000"),
        ("Soucis : 2,74 $ a..", "numeric", "2.74"),
        ("\\boxed{3 \\times 10^{8} \\mathrm{~m/s}}", "numeric", "3e8"),
        ("\\boxed{1.6e-3 \\text{ cm}}", "numeric", "1.6e-3"),
        # no answer
        ("", "math", None),
        ("I don't know what to say here at all", "math", None),
        ("\\boxed{3} and then \\boxed{\\frac{1", "math", None),
    ],
)
def test_extraction(text, task, expected):
    assert extract_answer(text, task) == expected


def test_a_reference_with_an_unclosed_box_is_read_to_the_end():
    assert extract_answer("so \\boxed{x = 2", "math") is None
    assert extract_answer("so \\boxed{x = 2", "math", reference=True) == "x = 2"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("28\\%", "28 percent"),
        ("28\\%", "28 pct"),
        ("1000", "1 000"),
        ("1000", "1\\,000"),
        ("32349", "32,\\! 349"),
        ("14916", "14{,}916"),
        ("2", "2 dollars"),
        ("12", "12 ft"),
        ("15", "15\\mbox{ cm}^2"),
        ("1000.99", "1,000.99€"),
        ("x = 3", "3"),
    ],
)
def test_same_canonical_key(a, b):
    assert canonicalize(a).key == canonicalize(b).key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("32349", "32, 349"),  # a list of two numbers, not a thousands-separated one
        ("12:00", "1:00"),
        ("2m", "2"),  # a single letter written bare may be a variable, not metres
        ("y=-\\frac{1}{2}x+\\frac{3}{4}", "-\\frac{1}{2}x+\\frac{3}{4}"),  # not an assignment to strip
    ],
)
def test_different_canonical_keys(a, b):
    assert canonicalize(a).key != canonicalize(b).key


EQUAL = [
    ("28\\%", "28 percent"),
    ("y=-\\frac12x+\\frac34", "2x+4y-3=0"),
    ("\\{1,2,3\\}", "1, 2, 3"),  # several boxes are a set: order does not matter
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("12:00", "12:00"),
    ("1000", "1,000"),
    ("[1,2)", "\\left[1, 2\\right)"),
]
DIFFERENT = [
    ("12:00", "1:00"),  # both parse to complex infinity: no parse is no answer
    ("32349", "32, 349"),
    ("(1,2)", "(2,1)"),  # tuples keep their order
    ("(1,2]", "[1,2]"),  # intervals keep their brackets
    ("[1,2)", "(1,2)"),
    ("\\frac{1}{0}", "\\frac{2}{0}"),
    ("1 - \\frac{1}{e}", "1 + \\frac{1}{e}"),
    ("\\text{Evelyn}", "\\text{Bob}"),
    ("x^2", "x^3"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_equal_answers_in_both_orders(clusterer, a, b):
    assert clusterer.same(a, b) and clusterer.same(b, a)
    assert clusterer.cluster([a, b]) == [0, 0] and clusterer.cluster([b, a]) == [0, 0]


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_answers_are_never_merged(clusterer, a, b):
    assert not clusterer.same(a, b) and not clusterer.same(b, a)
    assert clusterer.cluster([a, b]) == [0, 1] and clusterer.cluster([b, a]) == [0, 1]


def test_clustering_needs_verify_in_both_directions(clusterer):
    # math-verify accepts the inequality chain for the gold interval in one direction only.
    interval, chain = "x \\in [-2,7]", "-2 \\le x \\le 7"
    one_way = clusterer.same(chain, interval), clusterer.same(interval, chain)
    assert one_way[0] != one_way[1]
    assert clusterer.cluster([interval, chain]) == [0, 1]
    assert clusterer.cluster([chain, interval]) == [0, 1]


def test_empty_and_missing_answers_equal_nothing(clusterer):
    assert clusterer.same(None, None) is False
    assert clusterer.cluster([None, None, "1"]) == [-1, -1, 0]
    assert extract_answer("", "math") is None


@pytest.mark.parametrize("task", ["gsm8k", "numeric"])
def test_numeric_tasks_read_numbers_as_models_write_them(task):
    with AnswerClusterer(ConsistencyConfig(task=task, use_math_verify=False)) as c:
        answers = [
            extract_answer(t, task)
            for t in ("#### 1,500", "The answer is $1,500.", "1 500", "The final answer is 1500 m/s")
        ]
        assert c.cluster(answers) == [0, 0, 0, 0], answers
