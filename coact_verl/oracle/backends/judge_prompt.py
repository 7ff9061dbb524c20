"""What the LLM judge is asked (a few-shot chat) and how its verdict is read back."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from coact_verl.oracle.backends.base import Candidate, LabelQuery

SYSTEM = (
    "You grade answers to math questions. For each candidate, decide whether its final answer is mathematically "
    "equivalent to the correct answer. Reply with one JSON object only."
)
RETRY_NOTE = "Your previous reply was not a valid verdict ({reason}). Reply with the JSON object only."

# Worked examples shown before the query, as earlier chat turns (small judges copy the format from them).
_EXAMPLES = (
    (
        LabelQuery(
            0,
            "",
            "",
            "Ann has 4 bags with 6 apples each. How many apples does she have?",
            "gsm8k",
            0,
            (Candidate("20", "4*5=20.\n#### 20"), Candidate("24", "4*6=24 apples.\n#### 24")),
            "24",
        ),
        '{"correct": [false, true], "answer": "24"}',
    ),
    (
        LabelQuery(
            0,
            "",
            "",
            "A pen costs $3. How much do 5 pens cost?",
            "gsm8k",
            0,
            (Candidate("15", "5*3=15 dollars.\n#### 15"), Candidate("8", "5+3=8.\n#### 8")),
            "15",
        ),
        '{"correct": [true, false], "answer": "15"}',
    ),
)
# A ``correct`` list of JSON booleans closed by a mistyped bracket (``[true, false}``), as small models write.
_LOOSE_CORRECT = re.compile(r'"correct"\s*:\s*\[\s*((?:true|false)(?:\s*,\s*(?:true|false))*)\s*[\]}]')
_LOOSE_ANSWER = re.compile(r'"answer"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?[\d.]+))')


def query_text(query: LabelQuery, reference: str | None, max_response_chars: int = 4000) -> str:
    """The user turn for one query: question, reference (if shown), candidates, and the reply format."""
    parts = [f"Question:\n{query.prompt}\n"]
    if reference is not None:
        parts.append(f"Reference answer (ground truth):\n{reference}\n")
    for i, cand in enumerate(query.candidates, 1):
        response = cand.response
        if len(response) > max_response_chars:
            response = "…" + response[-max_response_chars:]
        answer = cand.answer if cand.answer is not None else "(none)"
        parts.append(f"Candidate {i}\nFinal answer: {answer}\n{response}\n")
    parts.append(
        f'Reply with only a JSON object: "correct" is a list of {len(query.candidates)} true/false values (one per '
        'candidate, in order) and "answer" is the correct final answer (null if unsure).'
    )
    return "\n".join(parts)


def build_messages(
    query: LabelQuery, reference: str | None, max_response_chars: int = 4000, few_shot: bool = True
) -> list[dict[str, str]]:
    """Chat messages asking for ``{"correct": [bool, ...], "answer": str | null}`` (one entry per candidate).

    With ``few_shot`` two worked examples precede the query (shown with a reference only when the query is).
    """
    messages = [{"role": "system", "content": SYSTEM}]
    for example, verdict in _EXAMPLES if few_shot else ():
        shown = example.gold if reference is not None else None
        messages += [
            {"role": "user", "content": query_text(example, shown)},
            {"role": "assistant", "content": verdict},
        ]
    messages.append({"role": "user", "content": query_text(query, reference, max_response_chars)})
    return messages


def with_retry_note(messages: list[dict[str, str]], reason: str) -> list[dict[str, str]]:
    """``messages`` with a reminder appended to the last (user) turn, for a retry after an invalid reply."""
    last = messages[-1]
    note = RETRY_NOTE.format(reason=reason[:160])
    return [*messages[:-1], {**last, "content": f"{last['content']}\n\n{note}"}]


def _json_objects(text: str) -> Iterator[Any]:
    """Every JSON value that starts at a ``{`` in ``text`` and parses, left to right (code fences and prose
    around it are skipped)."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        yield value
        i = text.find("{", end)


def parse_verdict(content: str, n: int) -> tuple[tuple[bool, ...], str | None]:
    """``(correct, answer)`` from the judge's reply; ``ValueError`` when it is not a valid verdict for ``n``.

    The verdict is the first JSON object with a ``correct`` list of ``n`` booleans anywhere in the reply; failing
    that, a ``"correct": [true, false...]`` list closed by a mistyped bracket.
    """
    problem = "no JSON object with 'correct'"
    for value in _json_objects(content):
        if not isinstance(value, dict) or "correct" not in value:
            continue
        correct = value["correct"]
        if isinstance(correct, list) and len(correct) == n and all(isinstance(c, bool) for c in correct):
            answer = value.get("answer")
            return tuple(correct), None if answer is None else str(answer)
        problem = f"'correct' must be a list of {n} booleans"
    loose = _LOOSE_CORRECT.search(content)
    if loose is not None:
        correct = tuple(v.strip() == "true" for v in loose.group(1).split(","))
        if len(correct) == n:
            answer = _LOOSE_ANSWER.search(content, loose.end())
            return correct, None if answer is None else answer.group(1) or answer.group(2)
        problem = f"'correct' must be a list of {n} booleans"
    raise ValueError(f"{problem}, got {content[:200]!r}")
