"""Final-answer extraction from model responses.

Every extractor reads only a bounded tail of the response (a final answer sits at the end) and uses
linear-time scans or regexes without nested quantifiers, so a 100 KB response, 10,000 nested braces or
an unclosed ``\\boxed{`` cost microseconds and yield ``None`` ("no answer") instead of an exception.

Tasks:
    ``gsm8k``: ``#### n``, ``\\boxed{n}``, "final answer: n", "the answer is n", else the last number.
        Returns a plain number string: ``"18,000"`` -> ``"18000"``, ``"$-3.50"`` -> ``"-3.50"``.
    ``math``: the last balanced ``\\boxed{...}`` / ``\\fbox{...}``, else "The answer is: ...".
        Returns the LaTeX between the braces, stripped.
    ``numeric``: like ``math`` but falls back to the last number, and a leading number written as
        ``1.6e-3``, ``3 \\times 10^{8}`` or ``3\\cdot10^8`` followed only by units is returned as
        ``"1.6e-3"`` / ``"3e8"`` (units dropped). Other answers are returned as LaTeX.
"""

from __future__ import annotations

import re

from coact_verl.config import TASKS

#: Characters at the end of a response that are searched for the final answer.
TAIL_CHARS = 8192
#: Longest answer (in characters) that is accepted; longer ones count as "no answer".
MAX_ANSWER_CHARS = 1000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_HASH_RE = re.compile(r"####")
_PHRASE_RE = re.compile(r"final\s+answer\**\s*(?:is\s*[:：]?|[:：])|the\s+answer\s+is\s*[:：]?", re.IGNORECASE)
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|~")  # ``\\\\`` first: a row break is not ``\\ ``
_TOKEN_RE = re.compile(r"[^\s$]{1," + str(MAX_ANSWER_CHARS) + "}")

# One number as written in prose: optional sign and currency, thousands separators, decimals.
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_SIGNED_NUM_RE = re.compile(r"(?<![\w.])(?P<sign>[-−–]?)\s?\\?\$?\s?(?P<num>" + _NUM + r")(?P<pct>\s?\\?%)?")
_FRAC_RE = re.compile(r"(?P<sign>-?)\s*\\[dt]?frac\s*\{\s*(?P<a>-?\d+)\s*\}\s*\{\s*(?P<b>\d+)\s*\}")
_SLASH_RE = re.compile(r"(?<![\w.])(?P<sign>-?)(?P<a>\d+)\s*/\s*(?P<b>\d+)(?![\d.])")

# Scientific notation for the numeric task.
_SCI_RE = re.compile(
    r"(?P<sign>[-+−]?)\s*(?:10\s*\^\s*\{?\s*(?P<e3>[-+−]?\d+)\s*\}?"
    r"|(?P<mant>\d+(?:\.\d*)?|\.\d+)"
    r"(?:\s*[eE]\s*(?P<e1>[-+]?\d+)|\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*(?P<e2>[-+−]?\d+)\s*\}?)?)"
)
_LAST_SCI_RE = re.compile(
    r"(?<![\w.])[-−]?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*[eE][-+]?\d+|\s*(?:\\times|\\cdot)\s*10\s*\^\s*\{?[-+−]?\d+\}?)?"
)
# What may follow a number and still be a unit: LaTeX commands (a whole run of letters, so that every
# string has exactly one tokenisation and matching stays linear), brace groups, letters, powers, slashes.
_UNIT_TAIL_RE = re.compile(r"(?:\\[A-Za-z]+(?![A-Za-z])|\\[%$]|\{[^{}]*\}|[\sA-Za-z0-9°%/^_.\-+()\[\]*·~])*")


def extract_answer(text: str, task: str) -> str | None:
    """Extract the final answer of one response.

    Args:
        text: the decoded response, any length (only the last ``TAIL_CHARS`` characters are read).
        task: ``gsm8k``, ``math`` or ``numeric``.

    Returns:
        The answer string, or ``None`` when the response has no recognisable final answer.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: unknown ``task``.
    """
    if not isinstance(text, str):
        raise TypeError(f"response must be a str, got {type(text).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    tail = text[-TAIL_CHARS:]
    if task == "gsm8k":
        answer = _extract_gsm8k(tail)
    elif task == "math":
        answer = _extract_math(tail)
    else:
        answer = _extract_numeric(tail)
    return _clean_unicode(answer) if answer else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``; ``None`` if absent, unclosed or too long."""
    start = _last_match_start(_BOX_RE, text)
    if start is None:
        return None
    pos = _BOX_RE.match(text, start).end()  # type: ignore[union-attr]
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] != "{":  # ``\boxed 5``: the next token
        token = _TOKEN_RE.match(text, pos)
        return (token.group(0).rstrip(".") or None) if token else None
    return _balanced(text, pos)


def _balanced(text: str, open_pos: int) -> str | None:
    """Content of the brace group opening at ``open_pos``; ``None`` if unclosed or longer than the limit."""
    depth = 0
    stop = min(len(text), open_pos + MAX_ANSWER_CHARS + 2)
    i = open_pos
    while i < stop:
        ch = text[i]
        if ch == "\\":  # an escaped brace ``\{`` does not open a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                content = text[open_pos + 1 : i].strip()
                return content or None
        i += 1
    return None


def _last_match_start(pattern: re.Pattern[str], text: str) -> int | None:
    last = None
    for match in pattern.finditer(text):
        last = match.start()
    return last


def _after_last(pattern: re.Pattern[str], text: str) -> str | None:
    """Text following the last match of ``pattern`` (at most ``MAX_ANSWER_CHARS`` characters)."""
    last = None
    for match in pattern.finditer(text):
        last = match
    if last is None:
        return None
    return text[last.end() : last.end() + MAX_ANSWER_CHARS]


def _last_phrase(text: str) -> re.Match[str] | None:
    """The last "final answer (is)" / "the answer is" in ``text``."""
    last = None
    for match in _PHRASE_RE.finditer(text):
        last = match
    return last


def _phrase_answer(rest: str) -> str | None:
    """The answer that follows a phrase: a ``\\boxed{}`` or ``$...$`` span, else the rest of the sentence."""
    rest = rest[:MAX_ANSWER_CHARS].lstrip(" \t*")
    first_line = rest.split("\n", 1)[0]
    if _BOX_RE.search(first_line):
        return last_boxed(first_line)
    if rest.startswith("$"):
        inner = rest.lstrip("$")
        end = inner.find("$")
        candidate = inner[:end] if end >= 0 else inner.split("\n", 1)[0]
    else:
        candidate = first_line
        if ". " in candidate:  # "The answer is 7. I hope it is correct."
            candidate = candidate.split(". ", 1)[0]
    return _strip_trailing(candidate.strip().strip("$").strip()) or None


def _final_statement(tail: str) -> str | None:
    """The later of the last ``\\boxed{}`` and the last answer phrase; an unclosed last box is no answer."""
    box = _last_match_start(_BOX_RE, tail)
    phrase = _last_phrase(tail)
    if phrase is not None and (box is None or phrase.start() > box):
        answer = _phrase_answer(tail[phrase.end() :])
        if answer or box is None:
            return answer
    return last_boxed(tail) if box is not None else None


def _strip_trailing(candidate: str) -> str:
    """Drop sentence punctuation, ``$`` and display-math closers from the end of an answer."""
    end = len(candidate)
    while end > 0:
        if candidate[end - 1] in ".,;$ \t":
            end -= 1
        elif end >= 2 and candidate[end - 2 : end] in ("\\]", "\\)", "\\.", "\\,", "\\;"):
            end -= 2
        else:
            break
    return candidate[:end].strip().strip("$").strip()


# --------------------------------------------------------------------------- gsm8k


def _first_number(segment: str) -> str | None:
    """First number-like token of ``segment`` as a plain string (fractions kept as ``a/b``)."""
    best: tuple[int, str] | None = None
    for pattern in (_FRAC_RE, _SLASH_RE):
        m = pattern.search(segment)
        if m:
            sign = "-" if m.group("sign") else ""
            best = (m.start("a"), f"{sign}{m.group('a')}/{m.group('b')}")
            break
    m = _SIGNED_NUM_RE.search(segment)
    if m and (best is None or m.start("num") < best[0]):
        best = (m.start(), _plain_number(m))
    return best[1] if best else None


def _plain_number(m: re.Match[str]) -> str:
    sign = "-" if m.group("sign") else ""
    pct = "%" if m.group("pct") else ""
    return f"{sign}{m.group('num').replace(',', '')}{pct}"


def _extract_gsm8k(tail: str) -> str | None:
    rest = _after_last(_HASH_RE, tail)
    if rest is not None:
        number = _first_number(rest.split("\n", 1)[0])
        if number:
            return number
    box = _last_match_start(_BOX_RE, tail)
    phrase = _last_phrase(tail)
    if phrase is not None and (box is None or phrase.start() > box):
        number = _first_number(tail[phrase.end() : phrase.end() + 200])
        if number:
            return number
    if box is not None:
        boxed = last_boxed(tail)
        number = _first_number(_SPACING_RE.sub(_unspace, boxed)) if boxed else None
        if number:
            return number
    last = None
    for m in _SIGNED_NUM_RE.finditer(tail):
        last = m
    return _plain_number(last) if last else None


# --------------------------------------------------------------------------- math / numeric


def _extract_math(tail: str) -> str | None:
    return _final_statement(tail)


def _extract_numeric(tail: str) -> str | None:
    answer = _final_statement(tail)
    if answer is None and _last_match_start(_BOX_RE, tail) is None:
        last = None
        for m in _LAST_SCI_RE.finditer(tail):
            last = m
        answer = last.group(0) if last else None
    if answer is None:
        return None
    return scientific_number(answer) or answer


def scientific_number(answer: str) -> str | None:
    """``"3 \\times 10^{8}\\text{ m/s}"`` -> ``"3e8"``; ``None`` unless ``answer`` is a number plus units only."""
    text = answer.replace("{,}", "").replace("\\left", "").replace("\\right", "")
    text = _SPACING_RE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text).strip().strip("$").strip()
    m = _SCI_RE.match(text)
    if m is None or m.end() == 0:
        return None
    rest = text[m.end() :]
    if rest and (rest[0].isdigit() or _UNIT_TAIL_RE.fullmatch(rest) is None):
        return None
    if rest.lstrip().startswith(("/", "^", "_", "*")) or re.match(r"\s*\\(?:frac|sqrt|pi)", rest):
        return None  # ``3/4``, ``2^5``, ``2\pi`` are expressions, not numbers with units
    sign = "-" if m.group("sign") in ("-", "−") else ""
    if m.group("e3") is not None:
        return f"{sign}1e{m.group('e3').replace('−', '-')}"
    mant = m.group("mant")
    exp = m.group("e1") or m.group("e2")
    if exp is not None:
        return f"{sign}{mant}e{exp.replace('−', '-').lstrip('+')}"
    return f"{sign}{mant}"


def _unspace(m: re.Match[str]) -> str:
    return m.group(0) if m.group(0) == "\\\\" else ""


def _clean_unicode(answer: str) -> str:
    """Replace lone surrogates (invalid UTF-16 halves) so the answer can be encoded, hashed and sent anywhere."""
    try:
        answer.encode("utf-8")
        return answer
    except UnicodeEncodeError:
        return answer.encode("utf-8", "replace").decode("utf-8")
