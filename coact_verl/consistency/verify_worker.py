"""math-verify calls that run inside the worker processes of :class:`~coact_verl.consistency.pool.HardTimeoutPool`.

Parsed expressions travel as pickled bytes: the calling process never unpickles them, so it never imports
sympy. Some unevaluated sympy objects do not survive pickling (``Eq(x, Interval(-2, 7))`` comes back as
``False``, ``-1*4*x`` as ``-4*x``); for those the payload is the answer text instead. Each worker keeps the
objects it parsed, keyed by payload, so a comparison in the worker that parsed both answers neither unpickles
nor parses again; another worker parses a text payload once and keeps it too. (Unpickling with sympy's automatic
evaluation off would rebuild more of them, but switching it clears all of sympy's caches in the worker.)
math-verify's own SIGALRM timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``); the
pool's hard timeout replaces them.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: Relative gap above which two numeric values cannot be equal under math-verify (it rounds to 6 places).
VALUE_GAP = 1e-5
_MAX_KEY_CHARS = 500
_LOCAL_CACHE = 4096
_loaded: OrderedDict[bytes | str, Any] = OrderedDict()


@dataclass(frozen=True)
class ParsedAnswer:
    """One answer parsed by math-verify.

    Attributes:
        blob: pickled list returned by ``math_verify.parse`` (sympy objects and/or strings), or the answer
            text itself when the parse does not survive a pickle round trip.
        value: numeric value of the first parsed object when it is a plain number, else ``None``.
        key: structural key (``sympy.srepr``) of the first parsed object when it is short, else ``None``;
            equal keys mean structurally identical expressions.
        relation: every parsed object is a relation (``=``, ``<``, ``\\le``, ``\\ne``, or a chain of them) that
            math-verify does not treat as an assignment (``x = 5``, whose right side it compares), and every text
            it extracted shows a relation sign. Such a gold never accepts a plain number: ``verify`` compares a
            relation with a number only through arithmetic that sympy refuses (``Eq - 3``), so it says no.
    """

    blob: bytes | str
    value: complex | None = None
    key: str | None = None
    relation: bool = False


#: Answers of common shapes parsed (and compared with their neighbours) when a worker starts. The LaTeX parser
#: (ANTLR) builds its prediction tables lazily, per grammar decision and input shape; parsing these first moves
#: that one-off cost (about 20% of the first few hundred parses) out of the first batches. It changes no result.
WARMUP_ANSWERS = (
    "\\frac{1}{2}",
    "0.5",
    "-3",
    "2\\sqrt{3}",
    "\\frac{\\sqrt{3}}{2}",
    "3\\pi",
    "\\frac{5\\pi}{4}",
    "2^{10}",
    "x^2+3x+2",
    "(1,2)",
    "(-\\infty,2)\\cup(3,\\infty)",
    "[-2,7]",
    "(0,\\frac{\\pi}{2}]",
    "\\{1,2,3\\}",
    "1,2,3",
    "x=5",
    "y=2x+3",
    "x\\in[-2,7]",
    "x<3",
    "2\\le x\\le 5",
    "a^2+b^2=c^2",
    "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
    "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
    "\\sin x",
    "\\cos\\theta",
    "\\tan^{-1}(2)",
    "\\log_2 8",
    "\\ln 3",
    "e^{2}",
    "3+4i",
    "|x-1|",
    "f(x)=2x+1",
    "x_1+x_2",
    "\\sqrt[3]{2}",
    "10!",
    "\\binom{5}{2}",
    "\\text{Evelyn}",
    "\\text{(A)}",
    "90^\\circ",
    "\\pm 2",
    "12\\%",
    "1.5\\times 10^{3}",
    "\\infty",
    "(3,\\frac{\\pi}{2})",
    "\\alpha+\\beta",
    "42_{9}",
    "5 \\pmod 7",
)


def init_worker() -> None:
    """Import math-verify once, silence its per-call timeout warnings and warm its parser on
    :data:`WARMUP_ANSWERS` (about a second per worker start)."""
    import math_verify  # type: ignore[import-untyped]  # noqa: F401

    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The first parse and comparison load grammars and caches; pay that before the worker reports ready.
    verify_pair(("\\frac{1}{2}", "0.5"))
    previous: ParsedAnswer | None = None
    for answer in WARMUP_ANSWERS:
        try:
            parsed = parse_answer(answer)
            if parsed is not None and previous is not None:
                verify_pair((previous.blob, parsed.blob))
        except Exception:  # a warm-up failure only leaves the parser cold
            parsed = None
        previous = parsed


def values_differ(a: complex, b: complex) -> bool:
    """True when two numbers are too far apart for math-verify to call them equal."""
    return abs(a - b) > VALUE_GAP * max(1.0, abs(a), abs(b))


def parse_answer(answer: str) -> ParsedAnswer | None:
    """Parse an extracted answer (LaTeX without ``$``) with math-verify; ``None`` when nothing parses."""
    exprs = _parse(answer)
    if not exprs or _degenerate(exprs[0]):
        return None
    value, key = _describe(exprs[0])
    payload = _faithful_blob(exprs) or answer
    _remember(payload, exprs)
    return ParsedAnswer(payload, value, key, _plain_relation(exprs))


def verify_pair(pair: tuple[bytes | str, bytes | str]) -> bool:
    """``math_verify.verify(gold, pred)`` on two :attr:`ParsedAnswer.blob` payloads (gold first)."""
    from math_verify import verify

    gold, pred = (_load(blob) for blob in pair)
    return bool(verify(gold, pred, timeout_seconds=None))


def _parse(answer: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    exprs: list[Any] = parse(
        "\\boxed{" + answer + "}",
        extraction_config=(LatexExtractionConfig(), ExprExtractionConfig()),
        parsing_timeout=None,
    )
    return exprs


_RELATION_SIGN_RE = re.compile(r"[=<>≤≥≠]|\\(?:le|ge|ne|lt|gt|leq|geq|neq|leqslant|geqslant)(?![A-Za-z])")


def _plain_relation(exprs: list[Any]) -> bool:
    """See :attr:`ParsedAnswer.relation`; decided with math-verify's own relation and assignment tests."""
    from math_verify.grader import is_assignment_relation, is_relation  # type: ignore[import-untyped]

    objects = [e for e in exprs if not isinstance(e, str)]
    texts = [e for e in exprs if isinstance(e, str)]
    return (
        bool(objects)
        and all(is_relation(e) and not is_assignment_relation(e) for e in objects)
        and all(_RELATION_SIGN_RE.search(t) for t in texts)
    )


def _degenerate(expr: Any) -> bool:
    """An empty, undefined or infinite-without-sign parse (``zoo``, ``nan``): "12:00" is not a number."""
    import sympy  # type: ignore[import-untyped]

    if isinstance(expr, str):
        return not expr.strip()
    if isinstance(expr, sympy.Basic):
        try:
            return bool(expr.has(sympy.zoo, sympy.nan))
        except Exception:  # an object whose tree cannot be walked
            return False
    return False


def _faithful_blob(exprs: list[Any]) -> bytes | None:
    """Pickled ``exprs`` when unpickling rebuilds objects equal to the originals, else ``None``."""
    blob = pickle.dumps(exprs, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return blob if pickle.loads(blob) == exprs else None
    except Exception:  # an object that pickles but cannot be rebuilt
        return None


def _remember(payload: bytes | str, exprs: Any) -> None:
    _loaded[payload] = exprs
    _loaded.move_to_end(payload)
    if len(_loaded) > _LOCAL_CACHE:
        _loaded.popitem(last=False)


def _load(blob: bytes | str) -> Any:
    obj = _loaded.get(blob)
    if obj is None:
        obj = pickle.loads(blob) if isinstance(blob, bytes) else _parse(blob)
        _remember(blob, obj)
    else:
        _loaded.move_to_end(blob)
    return obj


def _describe(expr: Any) -> tuple[complex | None, str | None]:
    import sympy

    if not isinstance(expr, sympy.Basic):
        return None, None
    text = sympy.srepr(expr)
    key = text if len(text) <= _MAX_KEY_CHARS else None
    value = None
    plain = isinstance(expr, sympy.Expr) and not isinstance(expr, sympy.MatrixBase)
    if plain and expr.is_number and not expr.has(sympy.UnevaluatedExpr):
        try:
            value = complex(expr.evalf(30))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            value = None
        if value is not None and (value != value or abs(value) == float("inf")):  # nan / inf
            value = None
    return value, key
