"""LLM-judge backend: any OpenAI-compatible chat-completions endpoint returning a JSON verdict."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from typing import TYPE_CHECKING, Any

import httpx

from coact_verl.oracle.backends.base import BackendError, LabelQuery, LabelResult, accepted_answer

if TYPE_CHECKING:
    from coact_verl.oracle.service.settings import OracleSettings

SYSTEM = (
    "You are an expert evaluator of mathematical reasoning. You check whether each candidate's final answer "
    "is correct. Reply with a single JSON object and nothing else."
)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def build_messages(query: LabelQuery, reference: str | None, max_response_chars: int = 4000) -> list[dict[str, str]]:
    """Chat messages asking for ``{"correct": [bool, ...], "answer": str | null}`` (one entry per candidate)."""
    parts = [f"Question:\n{query.prompt}\n"]
    if reference is not None:
        parts.append(f"Reference answer (ground truth):\n{reference}\n")
    for i, cand in enumerate(query.candidates, 1):
        response = (
            cand.response if len(cand.response) <= max_response_chars else "…" + cand.response[-max_response_chars:]
        )
        parts.append(
            f"Candidate {i}\nFinal answer: {cand.answer if cand.answer is not None else '(none)'}\n{response}\n"
        )
    parts.append(
        f'Return JSON: {{"correct": [{len(query.candidates)} booleans, one per candidate in order], '
        '"answer": "the correct final answer, or null if unsure"}. A candidate is correct when its final answer '
        "is mathematically equivalent to the correct answer."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def parse_verdict(content: str, n: int) -> tuple[tuple[bool, ...], str | None]:
    """``(correct, answer)`` from the judge's reply; ``ValueError`` when it is not a valid verdict for ``n``."""
    data = json.loads(_FENCE.sub("", content.strip()))
    correct = data.get("correct") if isinstance(data, dict) else None
    if not isinstance(correct, list) or len(correct) != n or not all(isinstance(c, bool) for c in correct):
        raise ValueError(f"verdict needs 'correct': a list of {n} booleans, got {content[:200]!r}")
    answer = data.get("answer")
    return tuple(correct), None if answer is None else str(answer)


class LLMJudgeBackend:
    """Asks a chat model for a verdict, with per-attempt timeouts, retries and exponential backoff (+jitter).

    Args:
        base_url: OpenAI-compatible base URL ending in ``/v1``.
        model: model name.
        api_key: bearer key (``None`` sends none).
        timeout_s: bound of one attempt, in seconds.
        retries: retries after a transport error, a 408/429/5xx answer or an unparsable verdict.
        backoff_s: first backoff, doubled per retry, in seconds.
        with_gold: show the judge the stored gold answer when there is one (a verifier rather than a blind judge).
        temperature: sampling temperature.
        max_tokens: completion length bound.
        json_mode: request ``response_format: json_object``.
    """

    name = "llm_judge"
    needs_gold = False
    automatic = True
    inline = False

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        with_gold: bool = True,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        json_mode: bool = True,
    ) -> None:
        self.model, self.timeout_s, self.retries, self.backoff_s = model, timeout_s, retries, backoff_s
        self.with_gold, self.temperature, self.max_tokens, self.json_mode = (
            with_gold,
            temperature,
            max_tokens,
            json_mode,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: OracleSettings) -> LLMJudgeBackend:
        """Build from service settings (the key is read from ``settings.judge_api_key_env``)."""
        if not settings.judge_url:
            raise ValueError("the llm_judge backend needs --judge-url")
        return cls(
            settings.judge_url,
            settings.judge_model,
            api_key=os.environ.get(settings.judge_api_key_env),
            timeout_s=settings.judge_timeout_s,
            retries=settings.judge_retries,
            with_gold=settings.judge_with_gold,
        )

    async def label(self, query: LabelQuery) -> LabelResult:
        """One verdict; raises :class:`BackendError` once every attempt failed."""
        reference = query.gold if self.with_gold else None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(query, reference),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            try:
                resp = await asyncio.wait_for(self._http.post("/chat/completions", json=body), self.timeout_s)
            except (httpx.TransportError, asyncio.TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code in _RETRY_STATUS:
                    continue
                raise BackendError(f"judge refused the request: {error}")
            try:
                content = resp.json()["choices"][0]["message"]["content"]
                correct, answer = parse_verdict(content, len(query.candidates))
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                error = f"bad verdict: {exc}"
                continue
            # With a reference shown, the judge's own answer may echo the hidden gold: keep a candidate's instead.
            accepted = accepted_answer(query.candidates, correct)
            if accepted is None and reference is None:
                accepted = answer
            return LabelResult(correct=correct, answer=accepted, source=self.name, extra={"attempts": attempt + 1})
        raise BackendError(f"judge failed after {self.retries + 1} attempts: {error}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
