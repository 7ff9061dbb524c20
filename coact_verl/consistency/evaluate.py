"""A small, conservative numeric evaluator for LaTeX answers, used to prove two answers *different* cheaply.

``approximate("3\\sqrt{13}")`` evaluates the answer to a float; letters become variables with fixed values,
so ``approximate("2x+3")`` is the value of the polynomial at one point. Equal expressions always get equal
values, hence values that differ beyond rounding prove two answers different without math-verify (which is
a thousand times slower). Equal values prove nothing: those pairs still go to math-verify.

Anything whose meaning math-verify might read differently returns ``None`` (no claim): ``e``/``i`` (Euler's
number or the imaginary unit?), words (``\\text{Evelyn}`` is compared as text), functions, relations, ``\\pm``,
subscripts, factorials, mixed numbers (``2\\frac{1}{2}`` is 5/2), non-real results and huge powers.

Structured answers are evaluated element by element: tuples and intervals (``(1,2]`` and ``(1,3]`` differ),
unions of disjoint intervals, sets (``\\{1,2\\}`` and bare lists ``3, 5, 7``) and matrices.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

#: Values closer than this (relative to max(1, |a|, |b|)) are not told apart; math-verify rounds decimals to 6 places.
GAP = 1e-5
_MAX_CHARS = 300
_MAX_DEPTH = 40
_TOKEN_RE = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[A-Za-z]+|\\[{}]|[A-Za-z]|[-+*/^(){}\[\],])")
# Lower-case Greek letters that are plain variables for math-verify (``\\Gamma(5)`` is 24, ``\\zeta(3)`` a value).
_GREEK = frozenset("alpha beta delta epsilon theta lambda mu nu rho sigma tau phi psi omega varepsilon varphi".split())
_OPEN = {"(": ")", "[": "]", "\\{": "\\}"}
_MATRIX_RE = re.compile(r"\\begin\{([pb]?matrix)\}([^{}]*)\\end\{\1\}")


class Approx(NamedTuple):
    """An evaluated answer.

    Attributes:
        kind: ``scalar``, ``ordered`` (tuple or interval), ``set``, ``union`` (of intervals) or ``matrix``.
        values: the evaluated elements, shape ``(m,)``; ``±inf`` only as interval ends.
        brackets: the bracket shape (``(]``, ``()()``, ``3x1``...); answers of different shape are not compared.
    """

    kind: str
    values: tuple[float, ...]
    brackets: str = ""


class _Bail(Exception):
    """The answer uses something this evaluator does not model."""


def approximate(text: str) -> Approx | None:
    """Evaluate a normalised answer (see ``canonical.normalize_latex``); ``None`` when unsure."""
    return _approximate(text)


def definitely_different(a: Approx, b: Approx) -> bool:
    """True only when the two evaluated answers cannot be equivalent."""
    if a.kind != b.kind or a.brackets != b.brackets:
        return False  # a tuple against an interval or a set: leave it to math-verify
    if a.kind == "set":
        return _set_missing(a.values, b.values) or _set_missing(b.values, a.values)
    if len(a.values) != len(b.values):
        return a.kind == "ordered"
    return any(_far(x, y) for x, y in zip(a.values, b.values, strict=True))


def _far(x: float, y: float) -> bool:
    if math.isinf(x) or math.isinf(y):
        return x != y
    return abs(x - y) > GAP * max(1.0, abs(x), abs(y))


def _set_missing(xs: tuple[float, ...], ys: tuple[float, ...]) -> bool:
    return any(all(_far(x, y) for y in ys) for x in xs)


@functools.lru_cache(maxsize=1 << 15)
def _approximate(text: str) -> Approx | None:
    if not text or len(text) > _MAX_CHARS:
        return None
    try:
        matrix = _MATRIX_RE.fullmatch(text)
        if matrix:
            return _matrix(matrix.group(2))
        tokens = _tokenize(text)
        if "\\cup" in tokens:
            return _union(tokens)
        opener = tokens[0] if tokens else ""
        if opener in _OPEN and tokens[-1] in (")", "]", "\\}") and _top_level_commas(tokens[1:-1]):
            values = tuple(_evaluate(part, allow_infinity=True) for part in _split(tokens[1:-1]))
            if opener == "\\{":
                return Approx("set", values, "{}") if tokens[-1] == "\\}" else None
            brackets = opener + tokens[-1]
            if len(values) == 2 and values[0] >= values[1] and brackets not in ("()", "[]"):
                return None  # a half-open interval may be empty for math-verify: ``(3,1]`` equals ``(5,2]``
            return Approx("ordered", values, brackets)
        if _top_level_commas(tokens):
            return Approx("set", tuple(_evaluate(part, allow_infinity=False) for part in _split(tokens)))
        return Approx("scalar", (_evaluate(tokens, allow_infinity=False),))
    except (_Bail, ArithmeticError, ValueError, RecursionError):
        return None


def _matrix(body: str) -> Approx | None:
    """``\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}`` as its entries, with the shape as brackets."""
    rows = [row.split("&") for row in body.split("\\\\")]
    if rows and not rows[-1][0].strip() and len(rows[-1]) == 1:
        rows.pop()  # a trailing row break
    width = len(rows[0]) if rows else 0
    if not width or any(len(r) != width for r in rows):
        return None
    values = tuple(_evaluate(_tokenize(cell.strip()), allow_infinity=False) for row in rows for cell in row)
    return Approx("matrix", values, f"{len(rows)}x{width}")


def _union(tokens: list[str]) -> Approx | None:
    """A union of intervals, as its sorted maximal parts (a unique representation), else ``None``."""
    parts: list[list[str]] = [[]]
    for t in tokens:
        if t == "\\cup":
            parts.append([])
        else:
            parts[-1].append(t)
    intervals = []
    for part in parts:
        if len(part) < 5 or part[0] not in ("(", "[") or part[-1] not in (")", "]"):
            return None
        ends = _split(part[1:-1])
        if len(ends) != 2:
            return None
        lo, hi = (_evaluate(e, allow_infinity=True) for e in ends)
        intervals.append((lo, hi, part[0], part[-1]))
    intervals.sort(key=lambda iv: (iv[0], iv[1]))
    for (lo, hi, _, right), (lo2, _, left2, _) in zip(intervals, intervals[1:], strict=False):
        if not (lo < hi and (hi < lo2 or (hi == lo2 and right == ")" and left2 == "("))):
            return None  # overlapping or mergeable parts: not the unique form
    values = tuple(v for lo, hi, _, _ in intervals for v in (lo, hi))
    return Approx("union", values, "".join(left + right for _, _, left, right in intervals))


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text[pos:].strip() == "":
                break
            raise _Bail(text[pos])
        tokens.append(m.group(1))
        pos = m.end()
    for a, b in zip(tokens, tokens[1:], strict=False):
        if len(a) == 1 and len(b) == 1 and a.isalpha() and b.isalpha():
            raise _Bail("a word")  # ``ab`` may be a name that math-verify compares as text
        if _is_number(a) and (_is_number(b) or b == "\\frac"):
            raise _Bail("mixed number")  # math-verify reads ``2\\frac{1}{2}`` as 5/2 and ``2 3`` as 5
        if a == "^" and _is_number(b) and len(b) > 1:
            raise _Bail("multi-digit exponent")  # ``x^23``: LaTeX means x^2*3, math-verify x^23
        if a[1:] in _GREEK and b == "(":
            raise _Bail("function call")
    return tokens


def _is_number(token: str) -> bool:
    return token[0].isdigit() or token[0] == "."


def _top_level_commas(tokens: list[str]) -> bool:
    depth = 0
    for t in tokens:
        depth += _depth_step(t)
        if t == "," and depth == 0:
            return True
    return False


def _depth_step(token: str) -> int:
    if token in ("(", "[", "{", "\\{"):
        return 1
    return -1 if token in (")", "]", "}", "\\}") else 0


def _split(tokens: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    depth = 0
    for t in tokens:
        depth += _depth_step(t)
        if t == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    if any(not p for p in parts):
        raise _Bail("empty element")
    return parts


def _evaluate(tokens: list[str], allow_infinity: bool) -> float:
    if allow_infinity and tokens in (["\\infty"], ["+", "\\infty"]):
        return math.inf
    if allow_infinity and tokens == ["-", "\\infty"]:
        return -math.inf
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.pos != len(tokens):
        raise _Bail("trailing tokens")
    if not math.isfinite(value):
        raise _Bail("not finite")
    return value


class _Parser:
    """Recursive descent over tokens: sums, products (explicit or implicit), unary signs, powers, primaries."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Bail(f"expected {expected}")
        self.pos += 1
        return token

    def expr(self, depth: int) -> float:
        if depth > _MAX_DEPTH:
            raise _Bail("too deep")
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            sign = self.take()
            rhs = self.term(depth)
            value = value + rhs if sign == "+" else value - rhs
        return value

    def term(self, depth: int) -> float:
        value = self.unary(depth)
        while True:
            token = self.peek()
            if token in ("*", "/", "\\cdot", "\\times", "\\div"):
                self.take()
                rhs = self.unary(depth)
                value = value / rhs if token in ("/", "\\div") else value * rhs
            elif token is not None and self._starts_primary(token):
                value *= self.power(depth)  # implicit multiplication: ``2x``, ``3\sqrt{5}``, ``x(x+1)``
            else:
                return value

    def unary(self, depth: int) -> float:
        if self.peek() in ("-", "+"):
            sign = self.take()
            value = self.unary(depth + 1)
            return -value if sign == "-" else value
        return self.power(depth)

    def power(self, depth: int) -> float:
        base = self.primary(depth)
        if self.peek() != "^":
            return base
        self.take()
        token = self.peek()
        if token == "{":
            exponent = self.group(depth)
        elif token is not None and _is_number(token):
            self.take()
            exponent = float(token)
        else:
            exponent = self.primary(depth)
        if abs(exponent) > 64 or (base < 0 and exponent != int(exponent)) or (base == 0 and exponent < 0):
            raise _Bail("power")
        return math.pow(base, exponent)

    def group(self, depth: int) -> float:
        self.take("{")
        value = self.expr(depth + 1)
        self.take("}")
        return value

    def _starts_primary(self, token: str) -> bool:
        return (
            _is_number(token)
            or token in ("(", "{", "\\frac", "\\sqrt", "\\pi")
            or _is_letter(token)
            or (token[1:] in _GREEK)
        )

    def primary(self, depth: int) -> float:
        token = self.take()
        if _is_number(token):
            return float(token)
        if token == "(":
            value = self.expr(depth + 1)
            self.take(")")
            return value
        if token == "{":
            self.pos -= 1
            return self.group(depth)
        if token == "\\frac":
            numerator = self.group(depth)
            return numerator / self.group(depth)
        if token == "\\sqrt":
            if self.peek() == "[":
                raise _Bail("root index")
            value = self.group(depth)
            if value < 0:
                raise _Bail("imaginary")
            return math.sqrt(value)
        if token == "\\pi":
            return math.pi
        if _is_letter(token):
            return _variable(token.lower())
        if token.startswith("\\") and token[1:] in _GREEK:
            return _variable(token[1:])
        raise _Bail(token)


def _is_letter(token: str) -> bool:
    return len(token) == 1 and token.isalpha() and token not in "eEiI"


def _variable(name: str) -> float:
    """A fixed, irrational-looking value in (0.6, 2.1) per variable name, the same in every process."""
    h = 0
    for ch in name:
        h = (h * 131 + ord(ch)) % 1_000_003
    return 0.6 + ((h * 0.6180339887498949) % 1.0) * 1.5 + 0.0137 * math.sqrt(2)
