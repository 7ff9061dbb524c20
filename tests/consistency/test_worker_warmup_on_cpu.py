"""A math-verify worker warms its LaTeX parser when it starts, and the warm-up changes no parse result.

The parser (ANTLR) fills its prediction tables (DFA states) lazily; a cold worker pays that on its first real
answers. Both checks run in fresh worker processes: one started with :func:`init_worker`, one that only imports
math-verify (a cold parser).
"""

from __future__ import annotations

from typing import Any

from coact_verl.consistency import HardTimeoutPool
from coact_verl.consistency.verify_worker import WARMUP_ANSWERS, init_worker, parse_answer, verify_pair

# Shapes like the warm-up's, none of them among its answers.
HELD_OUT = (
    "\\frac{3}{7}",
    "4\\sqrt{5}",
    "\\frac{7\\pi}{6}",
    "(4,-5)",
    "(-\\infty,-3]\\cup[2,\\infty)",
    "[0,\\frac{\\pi}{3})",
    "\\{2,4,6\\}",
    "x=-7",
    "y=-3x+1",
    "-1<x\\le 4",
    "\\begin{pmatrix}3\\\\-1\\end{pmatrix}",
    "\\cos 2x",
    "\\log_3 9",
    "2-5i",
    "g(x)=x^2",
)


def _import_only() -> None:
    import math_verify  # noqa: F401


def _prediction_states() -> int:
    from latex2sympy2_extended.antlr_parser import PSParser

    return sum(len(dfa.states) for dfa in PSParser.decisionsToDFA)


def _parse_held_out(_: object) -> tuple[int, list[Any], list[bool]]:
    """New prediction states added by parsing ``HELD_OUT``, the parse results, and both-way verdicts of neighbours."""
    before = _prediction_states()
    parsed = [parse_answer(answer) for answer in HELD_OUT]
    added = _prediction_states() - before
    verdicts = [
        verify_pair((a.blob, b.blob)) and verify_pair((b.blob, a.blob))
        for a, b in zip(parsed[:-1], parsed[1:], strict=True)
        if a is not None and b is not None
    ]
    return added, [(p.value, p.key, p.relation) if p is not None else None for p in parsed], verdicts


def test_warmup_fills_the_parser_tables_without_changing_a_result():
    assert not set(HELD_OUT) & set(WARMUP_ANSWERS)
    with HardTimeoutPool(workers=1, timeout_s=60.0, initializer=_import_only) as pool:
        [cold] = pool.map(_parse_held_out, [None])
    with HardTimeoutPool(workers=1, timeout_s=60.0, initializer=init_worker) as pool:
        [warm] = pool.map(_parse_held_out, [None])
    assert cold.ok and warm.ok, (cold, warm)
    cold_added, cold_parsed, cold_verdicts = cold.value
    warm_added, warm_parsed, warm_verdicts = warm.value
    assert warm_parsed == cold_parsed and warm_verdicts == cold_verdicts
    assert all(p is not None for p in warm_parsed)
    print(f"\nprediction states added by {len(HELD_OUT)} held-out answers: cold {cold_added}, warm {warm_added}")
    assert warm_added < cold_added / 2, (cold_added, warm_added)
