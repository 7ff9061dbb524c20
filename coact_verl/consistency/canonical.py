"""Cheap in-process canonical forms of extracted answers.

Two answers with the same :attr:`Canonical.key` are equivalent; the converse does not hold (``\\sqrt2/2`` and
``\\frac{1}{\\sqrt{2}}`` get different keys and are left to math-verify). Numbers become exact
``fractions.Fraction`` values, so ``0.5``, ``1/2``, ``\\dfrac{1}{2}``, ``x = 0.50`` and ``50\\%`` (with
``percent="fraction"``) share one key. The normalisation is deliberately conservative: it only rewrites
notation, never mathematics, so a key collision is never a false merge.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from coact_verl.config import TASKS
from coact_verl.consistency.extract import MAX_ANSWER_CHARS, scientific_number

PERCENT_POLICIES = ("strip", "fraction", "keep")
#: Decimal places at which a written decimal is compared with an exact value (math-verify's ``float_rounding``).
FLOAT_ROUNDING = 6
_MAX_EXPONENT = 400  # |exponent| above this stays a string: a Fraction of 10**10**9 would not fit in memory

# ``\\\\`` (a row break) is matched first so that its second backslash is never read as ``\\ `` (a space).
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![A-Za-z])|~|\\displaystyle(?![A-Za-z])")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])\.?")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])")
_UNIT_SUFFIX_RE = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mathrm|mbox|textrm)\s*\{\s*[A-Za-z][A-Za-z /.]*\}(?:\^\{?\d\}?)?$"
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|textit)\s*\{([^{}]*)\}")
_ASSIGN_RE = re.compile(r"^\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d)")
_WS_RE = re.compile(r"\s+")

_DEC = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_INT_OR_DEC_RE = re.compile(_DEC)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC_RE = re.compile(r"(?P<neg>-?)\\frac\{(?P<a>" + _DEC + r")\}\{(?P<b>" + _DEC + r")\}")
_SLASH_RE = re.compile(r"(?P<neg>)(?P<a>" + _DEC + r")/(?P<b>" + _DEC + r")")
_SCI_EXP_RE = re.compile(r"e(?P<exp>[-+]?\d+)$")


@dataclass(frozen=True)
class Canonical:
    """Canonical form of one answer.

    Attributes:
        key: hashable identity; ``("num", Fraction)`` for numbers, ``("str", text)`` otherwise.
        value: the exact value of a number, else ``None``.
        inexact: the number was written as a decimal or in scientific notation, so it is compared after
            rounding to ``FLOAT_ROUNDING`` places (as math-verify does), or with a relative tolerance.
        text: the normalised LaTeX handed to math-verify when this form must be compared symbolically.
    """

    key: tuple[str, object]
    value: Fraction | None = None
    inexact: bool = False
    text: str = ""

    @property
    def is_number(self) -> bool:
        return self.value is not None


def canonicalize(answer: str, task: str = "math", percent: str = "strip") -> Canonical:
    """Canonical form of an extracted answer.

    Args:
        answer: an extracted answer (see :func:`~coact_verl.consistency.extract.extract_answer`).
        task: ``gsm8k``, ``math`` or ``numeric``; ``numeric`` also reads scientific notation with units.
        percent: ``strip`` (``10\\%`` is 10), ``fraction`` (``10\\%`` is 1/10) or ``keep`` (a percentage is text).

    Raises:
        TypeError: ``answer`` is not a string.
        ValueError: unknown ``task`` or ``percent`` policy.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if percent not in PERCENT_POLICIES:
        raise ValueError(f"percent must be one of {PERCENT_POLICIES}, got {percent!r}")
    return _canonicalize(answer, task, percent)


def numbers_equal(a: Canonical, b: Canonical, rel_tol: float | None = None) -> bool:
    """Whether two numeric canonical forms are equal.

    With ``rel_tol`` the test is ``|a - b| <= rel_tol * max(|a|, |b|)``. Without it, exact values must match,
    unless one was written as a decimal: then both are rounded to ``FLOAT_ROUNDING`` places first, so
    ``0.333333`` equals ``1/3`` while ``0.33`` does not.
    """
    x, y = a.value, b.value
    if x is None or y is None:
        raise ValueError("numbers_equal needs two numeric canonical forms")
    if x == y:
        return True
    if rel_tol is not None:
        return abs(x - y) <= Fraction(rel_tol) * max(abs(x), abs(y))
    if a.inexact or b.inexact:
        return round(x, FLOAT_ROUNDING) == round(y, FLOAT_ROUNDING)
    return False


def normalize_latex(answer: str) -> str:
    """Notation-only normalisation: spacing, ``\\left``/``\\right``, ``\\dfrac``, ``\\text{}``, degrees, ``$``."""
    s = answer.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\dbinom", "\\binom")
    s = s.replace("\\tbinom", "\\binom").replace("{,}", "").replace("\\$", "").replace("$", "")
    s = _SPACING_RE.sub(_space, s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = _UNIT_SUFFIX_RE.sub("", s.strip())
    s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    return _squeeze(s)


def _space(m: re.Match[str]) -> str:
    return m.group(0) if m.group(0) == "\\\\" else " "


def _squeeze(s: str) -> str:
    """Collapse whitespace, keeping one space only between two word characters (``\\pi r`` stays apart)."""
    parts = _WS_RE.split(s.strip())
    out = parts[0] if parts else ""
    for part in parts[1:]:
        if out and part and (out[-1].isalnum() and part[0].isalnum()):
            out += " " + part
        else:
            out += part
    return out


@functools.lru_cache(maxsize=1 << 16)
def _canonicalize(answer: str, task: str, percent: str) -> Canonical:
    if len(answer) > MAX_ANSWER_CHARS:
        return Canonical(("str", answer.strip()), text=answer.strip())
    s = normalize_latex(answer)
    if s.count("=") == 1:
        m = _ASSIGN_RE.match(s)
        if m and m.end() < len(s):
            s = s[m.end() :]
    is_percent = s.endswith("\\%") or s.endswith("%")
    if is_percent:
        s = s[:-2] if s.endswith("\\%") else s[:-1]
        s = s.strip()
    number = _parse_number(s, task)
    if number is not None:
        value, inexact = number
        if is_percent and percent == "fraction":
            value /= 100
        if not (is_percent and percent == "keep"):
            return Canonical(("num", value), value, inexact, _number_text(value, inexact))
    text = s + "\\%" if is_percent and percent != "strip" else s
    return Canonical(("str", text), text=text)


def _number_text(value: Fraction, inexact: bool) -> str:
    """LaTeX of an exact value; a terminating decimal keeps its decimal point so math-verify treats it as a float."""
    sign = "-" if value < 0 else ""
    num, den = abs(value.numerator), value.denominator
    if den == 1:
        return f"{sign}{num}"
    if inexact:
        twos = fives = 0
        rest = den
        while rest % 2 == 0:
            rest //= 2
            twos += 1
        while rest % 5 == 0:
            rest //= 5
            fives += 1
        if rest == 1:
            places = max(twos, fives)
            digits = str(num * 10**places // den).rjust(places + 1, "0")
            return f"{sign}{digits[:-places]}.{digits[-places:]}"
    return f"{sign}\\frac{{{num}}}{{{den}}}"


def _parse_number(s: str, task: str) -> tuple[Fraction, bool] | None:
    """``(value, inexact)`` for an integer, decimal, simple fraction or (numeric task) scientific number."""
    if not s or len(s) > 200:
        return None
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if _INT_OR_DEC_RE.fullmatch(s):
        return Fraction(s), "." in s
    for pattern in (_FRAC_RE, _SLASH_RE):
        m = pattern.fullmatch(s)
        if m:
            a, b = Fraction(m.group("a")), Fraction(m.group("b"))
            if b == 0:
                return None
            value = a / b
            return (-value if m.group("neg") else value), "." in m.group("a") + m.group("b")
    if task == "numeric":
        sci = scientific_number(s)
        if sci is not None:
            exp = _SCI_EXP_RE.search(sci)
            if exp and abs(int(exp.group("exp"))) > _MAX_EXPONENT:
                return None
            return Fraction(sci), True
    return None
