"""Final-answer extraction from model responses.

Every extractor reads only a bounded tail of the response (a final answer sits at the end) and uses
linear-time scans or regexes without nested quantifiers, so a 100 KB response, 10,000 nested braces or
an unclosed ``\\boxed{`` cost microseconds and yield ``None`` ("no answer") instead of an exception.

The response is cut at its first end-of-turn token (``<|im_end|>``, ``<|im_start|>``, ``<|eot_id|>``,
``</s>``...): text after it is not the model's answer. Then the final statement is found, in order of trust:

1. the latest of three anchors: ``\\boxed{}``/``\\fbox{}``, an answer marker ("final answer is", "final
   answer:", "the answer is", "Answer:"), or GSM8K's ``####``. Several boxes separated only by punctuation,
   spacing or a short "and"/"or" phrase (``\\boxed{1}, \\boxed{2} and \\boxed{3}``) form one answer, the list
   ``1, 2, 3`` (a set for math-verify); repeated identical boxes count once. After a marker the answer is the
   math span or box that follows, else the rest of the sentence ("... is 120. I hope" -> ``120``);
2. without an anchor, the last LaTeX span: ``\\[..\\]``, ``$$..$$``, ``\\(..\\)`` or ``$..$`` (a ``$`` that
   opens prose is read as currency, not math);
3. without a span, a short text is a bare answer (``28 percent``, ``x \\in [-2,7]``) and is returned whole;
   longer prose yields its last number (``... is 2/3. <|im_start|>`` -> ``2/3``).

Tasks:
    ``gsm8k``: the statement reduced to one plain number: the result after the last ``=`` (``#### 9*2 = 18``
        -> ``18``), thousands separators (comma, space, thin space, apostrophe, ``{,}``, ``,\\!``) dropped,
        currency dropped, percent kept as ``%``, scientific notation expanded (``1 \\times 10^3`` -> ``1000``)
        and a decimal comma read as a decimal point where it cannot be a thousands separator (``2,74``).
    ``math``: the LaTeX of the statement.
    ``numeric``: like ``math``, but a number written with units (``1.6e-3 \\mathrm{~cm}``, ``3 \\times 10^{8}``)
        becomes a plain number string (``"1.6e-3"``, ``"3e8"``) and prose yields its number.
"""

from __future__ import annotations

import re
from fractions import Fraction

from coact_verl.tasks import TASKS

#: Characters at the end of a response that are searched for the final answer.
TAIL_CHARS = 8192
#: Longest answer (in characters) that is accepted; longer ones count as "no answer".
MAX_ANSWER_CHARS = 1000
#: Longest text that may be a bare answer, and the most prose words it may contain.
_BARE_CHARS = 300
_BARE_WORDS = 3

_END_OF_TURN_RE = re.compile(r"<\|(?:im_end|im_start|eot_id|end_of_text|endoftext|end|user|assistant)\|>|</s>")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_HASH_RE = re.compile(r"####")
# Every marker starts with "final", "the" or "answer": the leading lookahead only lets the scan skip other
# positions quickly (the matches are the same).
_MARKER_RE = re.compile(
    r"(?=[fta])(?:final\s+answers?\**\s*(?:is\s*[:：]?|[:：])|(?:the\s+)?answer\s+is\s*[:：]?"
    r"|(?<![A-Za-z])answer\s*[:：]|(?<![A-Za-z])answer(?=\s*(?:\$|\\\[|\\\()))",
    re.IGNORECASE,
)
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|~")  # ``\\\\`` first: a row break is not ``\\ ``
_TOKEN_RE = re.compile(r"[^\s$]{1," + str(MAX_ANSWER_CHARS) + "}")
_DELIM_RE = re.compile(r"\\\[|\\\]|\\\(|\\\)|\$\$|(?<!\\)\$")
_CURRENCY_AHEAD_RE = re.compile(r"\d|<<")
_CALC_RE = re.compile(r"<<[^<>\n]{0,200}>>")  # GSM8K calculator annotations ``<<48/2=24>>``
_CLOSER = {"\\[": "\\]", "\\(": "\\)", "$$": "$$", "$": "$"}
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|mathrm|mbox|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+\s*\{[A-Za-z*]*\}"
)
_GAP_WORDS_RE = re.compile(r"[A-Za-z]+")
_GAP_LATEX_RE = re.compile(r"\\(?:text|textbf|textrm|textnormal|mathrm|mbox)\s*\{([^{}]*)\}|\\[A-Za-z]+|\\.")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\s+I hope|\n")
_QUOTE_RE = re.compile(r'^\s*(?:\\"|"|“|”|``)')
_IS_RE = re.compile(r"\s(?:is|are|was|equals|be)\s", re.IGNORECASE)

# One number as written in prose: sign, currency, thousands separators (comma, thin spaces, apostrophe, a
# space between groups of three, ``{,}``, ``,\!``), a decimal point or comma, scientific notation, percent.
_SEP = r"(?:,|\{,\}|,\\!|\\,|\\!|\u2009|\u202f|\u00a0|'|’| )"
_GROUPED = r"[1-9]\d{0,2}(?:" + _SEP + r"\d{3}(?!\d))+(?:\.\d+)?"
_PLAIN = r"\d+(?:[.,]\d+)?|\.\d+"
_EXP = r"(?:\s*[eE]\s*[-+]?\d+(?![\d.])|\s*(?:\\times|\\cdot|×|\*)\s*10\s*\^\s*\{?\s*[-+−]?\d+\s*\}?)?"
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-−–]\s?)?(?:\\?\$|€|£|¥)?\s?(?P<num>" + _GROUPED + "|" + _PLAIN + r")(?P<exp>" + _EXP + r")"
    r"(?P<pct>\s?(?:\\?%|percent(?:age)?\b|pct\b))?"
)
_FRAC_RE = re.compile(r"(?P<sign>-?)\s*\\[dtc]?frac\s*\{\s*(?P<a>-?\d+)\s*\}\s*\{\s*(?P<b>\d+)\s*\}")
_SLASH_RE = re.compile(r"(?<![\w.])(?P<sign>-?)(?P<a>\d+)\s*/\s*(?P<b>\d+)(?!\d|\.\d)")
_SEP_STRIP_RE = re.compile(_SEP)

# Scientific notation for the numeric task.
_SCI_RE = re.compile(
    r"(?P<sign>[-+−]?)\s*(?:10\s*\^\s*\{?\s*(?P<e3>[-+−]?\d+)\s*\}?"
    r"|(?P<mant>\d+(?:\.\d*)?|\.\d+)"
    r"(?:\s*[eE]\s*(?P<e1>[-+]?\d+)|\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*(?P<e2>[-+−]?\d+)\s*\}?)?)"
)
# What may follow a number and still be a unit: LaTeX commands (a whole run of letters, so that every
# string has exactly one tokenisation and matching stays linear), brace groups, letters, powers, slashes.
_UNIT_TAIL_RE = re.compile(r"(?:\\[A-Za-z]+(?![A-Za-z])|\\[%$]|\{[^{}]*\}|[\sA-Za-z0-9°%/^_.\-+()\[\]*·~²³])*")
_MAX_EXPAND = 30  # 10**k with |k| above this stays in scientific notation


def extract_answer(text: str, task: str, *, reference: bool = False, finished: bool = True) -> str | None:
    """Extract the final answer of one response.

    Args:
        text: the decoded response (or a bare answer), any length (only the last ``TAIL_CHARS`` characters
            before the first end-of-turn token are read).
        task: ``gsm8k``, ``math`` or ``numeric``.
        reference: the text is a reference solution, never cut off: an unclosed final ``\\boxed{`` is read to
            the end of the text instead of meaning "truncated, no answer".
        finished: the response ended on its own; ``False`` when the rollout cut it at its length limit. A cut
            response states a final answer only through an explicit anchor before the cut (a box, an answer
            marker, ``####``): its last expression is wherever the reasoning happened to stop, not an answer.

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
    cut = _END_OF_TURN_RE.search(text)
    tail = _CALC_RE.sub("", (text[: cut.start()] if cut else text)[-TAIL_CHARS:])
    statement = final_statement(tail, reference=reference, anchored_only=not finished and not reference)
    if statement is None:
        return None
    if task == "gsm8k":
        answer = plain_number(statement)
    elif task == "numeric":
        answer = numeric_answer(statement)
    else:
        answer = statement
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    return _clean_unicode(answer)


def numeric_answer(statement: str) -> str:
    """The numeric task's reduction: a number with units becomes a plain number, prose yields its number."""
    sci = scientific_number(statement)
    if sci is not None:
        return sci
    if _NUMBER_RE.fullmatch(statement.strip()):
        return plain_number(statement) or statement
    word, digit = _PROSE_WORD_RE.search(statement), re.search(r"\d", statement)
    if word and digit and word.start() < digit.start():  # "so it is 3 \\cdot 10^8 m/s", "Soucis : 2,74 $"
        return plain_number(statement) or statement
    return statement


def final_statement(tail: str, *, reference: bool = False, anchored_only: bool = False) -> str | None:
    """The final answer of ``tail`` as written (LaTeX or text), before any task-specific reduction.

    ``anchored_only``: only a box, an answer marker or ``####`` states the answer; no last-expression fallback.
    """
    anchors = []
    box = _last_match(_BOX_RE, tail)
    if box is not None:
        anchors.append((box.start(), "box", box))
    marker = _last_match(_MARKER_RE, tail)
    if marker is not None:
        anchors.append((marker.start(), "marker", marker))
    hashes = _last_match(_HASH_RE, tail)
    if hashes is not None:
        anchors.append((hashes.start(), "hash", hashes))
    for _, kind, match in sorted(anchors, key=lambda a: a[0], reverse=True):
        if kind == "box":
            run = _box_run(tail)
            if run is None and reference:  # a reference is never cut off: read the box to the end
                rest = tail[match.end() :].strip()
                rest = rest[1:] if rest.startswith("{") else rest
                return _strip_trailing(rest)[:MAX_ANSWER_CHARS] or None
            return run  # an unclosed final box is a truncated response: no answer
        answer = _after_marker(tail[match.end() : match.end() + MAX_ANSWER_CHARS])
        if answer:
            return answer
    if anchored_only:
        return None
    spans = _spans(tail)
    if spans:
        number = _last_match(_NUMBER_RE, tail)
        if number is None or spans[-1][1] >= number.end() or not _is_prose(tail[spans[-1][1] :]):
            return _span_run(tail, spans)
    stripped = tail.strip()
    if not stripped:
        return None
    if len(stripped) <= _BARE_CHARS and "\n" not in stripped and _is_bare(stripped):
        return _strip_trailing(stripped) or None
    return _last_number_text(tail)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``; ``None`` if absent, unclosed or too long."""
    start = _last_match_start(_BOX_RE, text)
    if start is None:
        return None
    return _box_at(text, start)[0]


def _box_at(text: str, start: int) -> tuple[str | None, int]:
    """Content of the box whose command starts at ``start`` and the index just past it."""
    pos = _BOX_RE.match(text, start).end()  # type: ignore[union-attr]
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return None, pos
    if text[pos] != "{":  # ``\boxed 5``: the next token
        token = _TOKEN_RE.match(text, pos)
        if not token:
            return None, pos
        return (token.group(0).rstrip(".") or None), token.end()
    return _balanced(text, pos)


def _balanced(text: str, open_pos: int) -> tuple[str | None, int]:
    """Content of the brace group opening at ``open_pos`` (``None`` if unclosed, too long or empty), and its end."""
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
                return (content or None), i + 1
        i += 1
    return None, stop


def _box_run(text: str) -> str | None:
    """The last box, joined with the boxes just before it that are separated only by a list gap."""
    starts = [m.start() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    boxes: list[tuple[int, int, str | None]] = []
    for start in starts[-32:]:
        content, end = _box_at(text, start)
        boxes.append((start, end, content))
    last = boxes[-1]
    if last[2] is None:
        return None
    run = [last[2]]
    for prev, nxt in zip(reversed(boxes[:-1]), reversed(boxes[1:]), strict=True):
        if prev[2] is None or prev[1] > nxt[0] or not _is_list_gap(text[prev[1] : nxt[0]]):
            break
        run.append(prev[2])
    distinct = list(dict.fromkeys(reversed(run)))
    return ", ".join(distinct)


def _is_list_gap(gap: str) -> bool:
    """Whether the text between two boxes only separates items of one answer (``, `` / ``\\quad and``)."""
    if len(gap) > 80 or "." in gap.replace("\\.", ""):
        return False
    words = _GAP_WORDS_RE.findall(_GAP_LATEX_RE.sub(lambda m: " " + (m.group(1) or "") + " ", gap))
    if not words:
        return True
    return len(words) <= 4 and any(w.lower() in ("and", "or") for w in words)


def _spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of each LaTeX math span, left to right; a ``$`` that opens prose is currency."""
    spans = []
    open_delim: re.Match[str] | None = None
    for m in _DELIM_RE.finditer(text):
        d = m.group(0)
        if open_delim is None:
            if d in _CLOSER:
                open_delim = m
            continue
        if d == "$" and _CURRENCY_AHEAD_RE.match(text, m.end()):  # "$204 + $160": a price, never a closer
            open_delim = m
            continue
        if d == _CLOSER[open_delim.group(0)]:
            content = text[open_delim.end() : m.start()]
            if open_delim.group(0) == "$" and _is_prose(content):
                open_delim = m  # "$5 for the pen and $" : the first ``$`` was currency
                continue
            spans.append((open_delim.start(), m.end(), content))
            open_delim = None
        elif d in ("\\[", "\\(") or (d == "$$" and open_delim.group(0) != "$"):
            open_delim = m  # an unclosed opener: start over from the new one
    return spans


def _span_run(text: str, spans: list[tuple[int, int, str]]) -> str | None:
    """The last math span, joined with the spans just before it separated only by a list gap."""
    spans = [sp for sp in spans if sp[2].strip()]
    if not spans:
        return None
    run = [spans[-1][2]]
    for prev, nxt in zip(reversed(spans[:-1]), reversed(spans[1:]), strict=True):
        if not _is_list_gap(text[prev[1] : nxt[0]]):
            break
        run.append(prev[2])
    items = [_chain_result(_strip_trailing(item)) for item in reversed(run)]
    return ", ".join(dict.fromkeys(i for i in items if i)) or None


def _chain_result(item: str) -> str:
    """``1+201 = 202`` stays; ``a = 5+5+1 = 11`` (a chain of two or more ``=``) is its result ``11``.

    Applies to math spans only (a box states its answer on purpose); an equation with one ``=``
    (``x^2+y^2=1``) is kept whole.
    """
    if item.count("=") < 2 or any(op in item for op in ("\\le", "\\ge", "<", ">", "\\neq", "\\approx")):
        return item
    last = item.rsplit("=", 1)[1].strip()
    return last or item


def _after_marker(rest: str) -> str | None:
    """The answer that follows a marker: a box or math span, else the rest of the sentence."""
    rest = rest.lstrip(" \t*:：")
    if not rest.strip():
        return None
    if rest.startswith("\n"):  # "Final answer:\n\\[ 42 \\]"
        rest = rest.lstrip()
    rest = _QUOTE_RE.sub("", rest, count=1)
    first_line = rest.split("\n", 1)[0]
    if _BOX_RE.search(first_line):
        return _box_run(first_line)
    if rest.startswith(("$", "\\[", "\\(")):
        spans = _spans(rest)
        if spans:
            run = [spans[0]]
            for sp in spans[1:]:
                if not _is_list_gap(rest[run[-1][1] : sp[0]]):
                    break
                run.append(sp)
            return _span_run(rest, run)
    end = _SENTENCE_END_RE.search(first_line)
    sentence = first_line[: end.start()] if end else first_line
    if _PROSE_WORD_RE.search(_TEXT_CMD_RE.sub(" ", sentence)):
        # "The volume of $ABCDEFGH$ is 120", "The largest $n$ is 34", "Jane started ... 3 hours ago"
        is_match = _last_match(_IS_RE, sentence)
        if is_match is not None and _PROSE_WORD_RE.search(sentence[: is_match.start()]):
            tail = _QUOTE_RE.sub("", sentence[is_match.end() :].lstrip(), count=1)
            spans = _spans(tail)
            if tail.startswith(("$", "\\(")) and spans:
                return _span_run(tail, spans)
            if not _is_prose(tail):
                return _strip_trailing(tail) or None
            sentence = tail
        if _is_prose(sentence):
            spans = _spans(sentence)
            if spans:
                return _span_run(sentence, spans)
            return _first_number_text(sentence)
    return _strip_trailing(sentence.strip().strip('"').strip()) or None


def _is_bare(text: str) -> bool:
    """A bare answer: at most one word (``odd``, ``28 percent``), or a few words around math (``19, 46, and 82``)."""
    words = len(_PROSE_WORD_RE.findall(_TEXT_CMD_RE.sub(" ", text)))
    if words > 1 and _IS_RE.search(text):  # "the probability is 2/3": a sentence
        return False
    return words <= 1 or (words <= _BARE_WORDS and re.search(r"[\d\\=<>]", text) is not None)


def _is_prose(text: str) -> bool:
    """More than a few words outside LaTeX commands and ``\\text{}``: a sentence, not an answer."""
    return len(_PROSE_WORD_RE.findall(_TEXT_CMD_RE.sub(" ", text))) > _BARE_WORDS


def _strip_trailing(candidate: str) -> str:
    """Drop sentence punctuation, ``$`` and display-math closers from the ends of an answer."""
    candidate = candidate.strip()
    end = len(candidate)
    while end > 0:
        if candidate[end - 1] in ".,;$ \t\n":
            end -= 1
        elif end >= 2 and candidate[end - 2 : end] in ("\\]", "\\)", "\\.", "\\,", "\\;"):
            end -= 2
        else:
            break
    out = candidate[:end].strip()
    for opener in ("\\[", "\\(", "$$", "$"):
        if out.startswith(opener):
            out = out[len(opener) :].strip()
    return out


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _last_match_start(pattern: re.Pattern[str], text: str) -> int | None:
    last = _last_match(pattern, text)
    return last.start() if last else None


# --------------------------------------------------------------------------- numbers


def _first_number_text(segment: str) -> str | None:
    m = _NUMBER_RE.search(segment)
    return m.group(0).strip() if m else None


def _last_number_text(segment: str) -> str | None:
    """The last number of prose, as written (``2/3``, ``1,000.99``, ``100%``)."""
    last = _last_match(_NUMBER_RE, segment)
    slash = _last_match(_SLASH_RE, segment)
    if slash is not None and (last is None or slash.end() >= last.end()):
        return slash.group(0).strip()
    if last is None:
        return None
    return last.group(0).strip().rstrip(".")


def plain_number(statement: str) -> str | None:
    """One number from a final statement, as a plain string: ``"18000"``, ``"-3.50"``, ``"25%"``, ``"3/4"``.

    The number is the result after the last ``=`` (``9*2 = 18``), else the first number of the statement.
    ``None`` when the statement holds no number.
    """
    text = _SPACING_RE.sub(_unspace_sep, statement)
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    best: tuple[int, str] | None = None
    for pattern in (_FRAC_RE, _SLASH_RE):
        m = pattern.search(text)
        if m:
            sign = "-" if m.group("sign") else ""
            best = (m.start("a"), f"{sign}{m.group('a')}/{m.group('b')}")
            break
    m = _NUMBER_RE.search(text)
    if m and (best is None or m.start("num") < best[0]):
        return _number_string(m)
    return best[1] if best else None


def _number_string(m: re.Match[str]) -> str:
    sign = "-" if m.group("sign") else ""
    pct = "%" if m.group("pct") else ""
    num = m.group("num")
    if re.fullmatch(_GROUPED, num):
        num = _SEP_STRIP_RE.sub("", num)
    elif "," in num:  # ``2,74``, ``0,111``: a comma that cannot separate thousands is a decimal comma
        num = num.replace(",", ".")
    exp = m.group("exp").strip()
    if exp:
        digits = re.findall(r"[-+−]?\d+", exp)[-1].replace("−", "-")
        power = int(digits) if len(digits) <= 8 else 10**9
        if abs(power) <= _MAX_EXPAND:
            value = Fraction(num) * Fraction(10) ** power
            num = str(value.numerator) if value.denominator == 1 else _decimal(value, num, power)
        else:
            num = f"{num}e{digits.lstrip('+')}"
    return f"{sign}{num}{pct}"


def _decimal(value: Fraction, mantissa: str, power: int) -> str:
    places = max(0, len(mantissa.split(".", 1)[1]) if "." in mantissa else 0) - power
    places = max(places, 1)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    return f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")


def _unspace_sep(m: re.Match[str]) -> str:
    """``\\,`` and ``\\!`` inside numbers are kept for the thousands pattern; other spacing becomes a space."""
    return m.group(0) if m.group(0) in ("\\\\", "\\,", "\\!") else " "


def scientific_number(answer: str) -> str | None:
    """``"3 \\times 10^{8}\\text{ m/s}"`` -> ``"3e8"``; ``None`` unless ``answer`` is a number plus units only."""
    text = answer.replace("{,}", "").replace("\\left", "").replace("\\right", "")
    text = _SPACING_RE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text).strip().strip("$").strip()
    m = _SCI_RE.match(text)
    if m is None or m.end() == 0:
        return None
    rest = text[m.end() :]
    if rest and (rest.lstrip()[:1].isdigit() or rest[0] in ",.'" or _UNIT_TAIL_RE.fullmatch(rest) is None):
        return None
    if rest.lstrip().startswith(("/", "^", "_", "*")) or re.match(r"\s*\\(?:frac|sqrt|pi)", rest):
        return None  # ``3/4``, ``2^5``, ``2\pi`` are expressions, not numbers with units
    if re.match(r"\s*[-+]\s*[\d.\\(]", rest):
        return None  # ``3 + 4``: an expression
    sign = "-" if m.group("sign") in ("-", "−") else ""
    if m.group("e3") is not None:
        return f"{sign}1e{m.group('e3').replace('−', '-')}"
    mant = m.group("mant")
    exp = m.group("e1") or m.group("e2")
    if exp is not None:
        return f"{sign}{mant}e{exp.replace('−', '-').lstrip('+')}"
    return f"{sign}{mant}"


def _clean_unicode(answer: str) -> str:
    """Replace lone surrogates (invalid UTF-16 halves) so the answer can be encoded, hashed and sent anywhere."""
    try:
        answer.encode("utf-8")
        return answer
    except UnicodeEncodeError:
        return answer.encode("utf-8", "replace").decode("utf-8")
