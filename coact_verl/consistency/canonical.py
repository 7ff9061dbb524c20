"""Cheap in-process canonical forms of extracted answers.

Two answers with the same :attr:`Canonical.key` are equivalent; the converse does not hold (``\\sqrt2/2`` and
``\\frac{1}{\\sqrt{2}}`` get different keys and are left to math-verify). Numbers become exact
``fractions.Fraction`` values, so ``0.5``, ``1/2``, ``\\dfrac{1}{2}``, ``x = 0.50`` and ``50\\%`` (with
``percent="fraction"``) share one key. The normalisation is deliberately conservative: it only rewrites
notation, never mathematics, so a key collision is never a false merge.

Notation handled: thousands separators (``1,000``, ``1{,}000``, ``1,\\!000``, ``1\\,000``, ``1 000``, thin
spaces, ``1'000``; ``32, 349`` with a space stays a list of two numbers), currency (``\\$``, ``€``, ``£``, ``¥``,
"dollars"), percent (``\\%``, ``%``, "percent", "pct"; see ``percent``), degrees, and units. Units are a fixed
table (``_UNIT_WORDS``: SI and common words, currencies, counts) rather than ``pint``: a table is
dependency-free, microseconds per answer and never reinterprets a variable, and single-letter units (``m``,
``s``, ``g``) are dropped only inside ``\\text{}``/``\\mathrm{}``, since ``2m`` may be a product. A unit word is
dropped, not converted: ``5 km`` and ``5000 m`` are different answers. ``x = 3`` is the number 3, but an
equation whose right side is not a number (``y = 2x + 1``) is kept whole. Times of day (``12:00``, ``1:30 pm``)
get a ``("time", seconds)`` key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from coact_verl.consistency.extract import MAX_ANSWER_CHARS, scientific_number
from coact_verl.tasks import TASKS

PERCENT_POLICIES = ("strip", "fraction", "keep")
#: Decimal places at which a written decimal is compared with an exact value (math-verify's ``float_rounding``).
FLOAT_ROUNDING = 6
_MAX_EXPONENT = 400  # |exponent| above this stays a string: a Fraction of 10**10**9 would not fit in memory

# ``\\\\`` (a row break) is matched first so that its second backslash is never read as ``\\ `` (a space).
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![A-Za-z])|~|\\displaystyle(?![A-Za-z])")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])\.?")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])")
_UNIT_SUFFIX_RE = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mathrm|mbox|textrm|textnormal)\s*\{\s*[A-Za-z][A-Za-z /.]*\}(?:\^\{?\d\}?)?$"
)
# Unit words dropped after a number (or ``\pi``): a fixed table of SI and common units, currencies and counts.
# Single letters (``m``, ``s``, ``g``) are units only inside ``\text{}``/``\mathrm{}`` (handled above): written bare
# they may be variables (``2m``).
_UNIT_WORDS = (
    "cm|mm|km|nm|kg|mg|ml|mL|ft|feet|foot|inch(?:es)?|yards?|yd|miles?|mph|kph|km/h|m/s\\^?2?|sec(?:ond)?s?|mins?"
    "|minutes?|hrs?|hours?|days?|weeks?|months?|years?|(?:centi|milli|kilo)?met(?:er|re)s?|(?:kilo|milli)?grams?"
    "|lit(?:er|re)s?|gallons?|pounds?|lbs?|ounces?|oz|degrees?|units?|square\\s+\\w+|sq\\s+\\w+|cubic\\s+\\w+"
    "|dollars?|euros?|yuan|rupees?|USD|EUR|points?|kPa|Hz|kHz|MHz|kJ|eV|mol|persons?|people"
)
_UNIT_WORD_RE = re.compile(r"(?:(?<=[\d}])|(?<=\\pi))\s*(?:" + _UNIT_WORDS + r")(?:\^\{?[23]\}?|²|³)?\.?$")
_CURRENCY_RE = re.compile(r"^(?:[-−]\s*)?(?:€|£|¥|USD\s*|EUR\s*)|(?:€|£|¥)$")
_PERCENT_WORD_RE = re.compile(r"(?<=[\d}])\s*(?:percent(?:age)?|per\s+cent|pct)\.?$", re.IGNORECASE)
_DIGIT_SEP_RE = re.compile(r"(?<=\d)(?:,\\!\s*|\\[,!]|\{,\}|[\u2009\u202f\u00a0'’])(?=\d{3}(?!\d))")
_THREE_DIGITS_RE = re.compile(r"\d{3}(?!\d)")
# ``\\\\frac``: a doubly escaped command (text copied from source code), not a row break followed by letters.
_DOUBLED_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:text|textbf|frac|dfrac|tfrac|left|right|boxed|sqrt|mathrm|pi|cdot|times|leq?|geq?|infty"
    r"|cup|cap|pm|in|neq?|sin|cos|tan|log|ln)(?![A-Za-z]))"
)
_TIME_RE = re.compile(r"([01]?\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?\s*([ap])?\.?(?:m\.?)?", re.IGNORECASE)
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|textnormal|mathrm|mbox|mathbf|textit)\s*\{([^{}]*)\}")
_ASSIGN_RE = re.compile(r"^\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d)")
_WS_RE = re.compile(r"\s+")

_DEC = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_INT_OR_DEC_RE = re.compile(_DEC)
_THOUSANDS_RE = re.compile(r"[-+]?[1-9]\d{0,2}(?:[, ]\d{3})+(?:\.\d+)?")
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
    """Notation-only normalisation: spacing, ``\\left``/``\\right``, ``\\dfrac``, ``\\text{}``, degrees, currency,
    percent words, unit words, digit-group separators (``1{,}000``, ``1\\,000``, ``1 000``, ``1'000``).

    A comma and a space between a digit and exactly three digits (``32, 349``) separate two numbers and keep their
    space; without the space (``32,349``) the comma separates thousands. Other spaces after commas are dropped.
    """
    s = _DOUBLED_RE.sub(r"\\", answer.strip())
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = _DIGIT_SEP_RE.sub("", s)
    s = s.replace("{,}", "").replace("\\$", "").replace("$", "")
    s = _SPACING_RE.sub(_space, s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = _CURRENCY_RE.sub("", s.strip())
    s = _PERCENT_WORD_RE.sub("\\\\%", s.strip())
    s = _UNIT_SUFFIX_RE.sub("", s.strip())
    s = _UNIT_WORD_RE.sub("", s.strip())
    s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    return _squeeze(s)


def _space(m: re.Match[str]) -> str:
    return m.group(0) if m.group(0) == "\\\\" else " "


def _list_comma(out: str, part: str) -> bool:
    """``32, 349``: a comma and a space between digit groups separate two numbers; keep the space."""
    return len(out) > 1 and out[-1] == "," and out[-2].isdigit() and _THREE_DIGITS_RE.match(part) is not None


def _squeeze(s: str) -> str:
    """Collapse whitespace, keeping one space only between two word characters (``\\pi r`` stays apart)."""
    parts = _WS_RE.split(s.strip())
    out = parts[0] if parts else ""
    for part in parts[1:]:
        if out and part and ((out[-1].isalnum() and part[0].isalnum()) or _list_comma(out, part)):
            out += " " + part
        else:
            out += part
    return out


@functools.lru_cache(maxsize=1 << 16)
def _canonicalize(answer: str, task: str, percent: str) -> Canonical:
    if len(answer) > MAX_ANSWER_CHARS:
        return Canonical(("str", answer.strip()), text=answer.strip())
    s = normalize_latex(answer)
    time = _TIME_RE.fullmatch(s)
    if time and (time.group(4) is None or int(time.group(1)) <= 12):
        hours = int(time.group(1)) % 12 if time.group(4) else int(time.group(1))
        if time.group(4) and time.group(4).lower() == "p":
            hours += 12
        seconds = hours * 3600 + int(time.group(2)) * 60 + int(time.group(3) or 0)
        return Canonical(("time", seconds), text=s)
    if s.count("=") == 1:
        m = _ASSIGN_RE.match(s)
        if m and m.end() < len(s) and _parse_number(s[m.end() :].rstrip("\\%").strip(), task) is not None:
            s = s[m.end() :]  # ``x = 3`` is the number 3; ``y = 2x + 1`` stays an equation
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
        s = s.replace(",", "").replace(" ", "")
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
