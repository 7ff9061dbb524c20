"""LLM-judge backend: any OpenAI-compatible chat-completions endpoint returning a JSON verdict."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx

from coact_verl.oracle.backends.base import BackendError, LabelQuery, LabelResult, accepted_answer
from coact_verl.oracle.backends.judge_prompt import build_messages, parse_verdict, with_retry_note

if TYPE_CHECKING:
    from coact_verl.oracle.service.settings import OracleSettings

__all__ = ["JudgeError", "JudgeStatus", "LLMJudgeBackend", "build_messages", "parse_verdict"]

JudgeStatus = Literal["timeout", "unavailable", "refused", "no_verdict"]
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_TIMEOUT_STATUS = {408, 504}


def _reply_text(resp: httpx.Response) -> str:
    """The assistant message of a chat-completions answer, or the raw body when it has none."""
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return resp.text[:500]
    return content if isinstance(content, str) else str(content)


class JudgeError(BackendError):
    """The judge gave no verdict (never read as "incorrect"; the service refunds the charge).

    Args:
        status: why, for the last attempt: ``timeout`` (no answer in time), ``unavailable`` (transport error,
            429/5xx), ``refused`` (another 4xx, not retried) or ``no_verdict`` (the reply was no valid verdict).
        attempts: requests sent.
        detail: the last error.
        replies: the invalid replies received, in order.
    """

    def __init__(self, status: JudgeStatus, attempts: int, detail: str, replies: Sequence[str] = ()) -> None:
        plural = "" if attempts == 1 else "s"
        super().__init__(f"judge gave no verdict [{status}] after {attempts} attempt{plural}: {detail}")
        self.status, self.attempts, self.detail, self.replies = status, attempts, detail, tuple(replies)


class LLMJudgeBackend:
    """Asks a chat model for a verdict, with per-attempt timeouts, bounded retries and exponential backoff.

    A retry after an invalid reply sends the prompt again with a reminder, at ``retry_temperature`` and a new
    seed (a greedy judge would repeat itself); a retry after a transport error, a timeout or a 408/429/5xx
    answer backs off first. A 4xx answer is not retried.

    Args:
        base_url: OpenAI-compatible base URL ending in ``/v1``.
        model: model name.
        api_key: bearer key (``None`` sends none).
        timeout_s: bound of one attempt, in seconds.
        retries: attempts after the first, whatever went wrong.
        backoff_s: first backoff, doubled per retry (with jitter), in seconds.
        with_gold: show the judge the stored gold answer when there is one (a verifier rather than a blind judge).
        temperature: sampling temperature of the first attempt.
        max_tokens: completion length bound.
        json_mode: request ``response_format: json_object``.
        few_shot: show two worked examples before the query.
        retry_temperature: lowest temperature of retries after an invalid reply.
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
        few_shot: bool = True,
        retry_temperature: float = 0.7,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or max_tokens < 1:
            raise ValueError("timeout_s must be > 0, retries >= 0 and max_tokens >= 1")
        self.model, self.timeout_s, self.retries, self.backoff_s = model, timeout_s, retries, backoff_s
        self.with_gold, self.temperature, self.max_tokens = with_gold, temperature, max_tokens
        self.json_mode, self.few_shot, self.retry_temperature = json_mode, few_shot, retry_temperature
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
            max_tokens=settings.judge_max_tokens,
        )

    def _body(self, messages: list[dict[str, str]], attempt: int, invalid: str | None) -> dict[str, Any]:
        """The request of one attempt; ``invalid`` is why the previous reply was no verdict, if it was not."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if invalid is not None:
            body.update(
                messages=with_retry_note(messages, invalid),
                temperature=max(self.temperature, self.retry_temperature),
                seed=attempt,
            )
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def label(self, query: LabelQuery) -> LabelResult:
        """One verdict; raises :class:`JudgeError` once every attempt failed."""
        reference = query.gold if self.with_gold else None
        messages = build_messages(query, reference, few_shot=self.few_shot)
        status: JudgeStatus = "unavailable"
        detail, invalid = "no attempt", None
        replies: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt and invalid is None:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            body = self._body(messages, attempt, invalid)
            invalid = None
            try:
                resp = await asyncio.wait_for(self._http.post("/chat/completions", json=body), self.timeout_s)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                status, detail = "timeout", f"no answer within {self.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                status, detail = "unavailable", f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code != 200:
                detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRY_STATUS:
                    raise JudgeError("refused", attempt + 1, detail, replies)
                status = "timeout" if resp.status_code in _TIMEOUT_STATUS else "unavailable"
                continue
            content = _reply_text(resp)
            try:
                correct, answer = parse_verdict(content, len(query.candidates))
            except ValueError as exc:
                status, detail = "no_verdict", str(exc)
                invalid = detail
                replies.append(content)
                continue
            # With a reference shown, the judge's own answer may echo the hidden gold: keep a candidate's instead.
            accepted = accepted_answer(query.candidates, correct)
            if accepted is None and reference is None:
                accepted = answer
            extra: dict[str, object] = {"attempts": attempt + 1, "invalid_replies": len(replies)}
            return LabelResult(correct=correct, answer=accepted, source=self.name, extra=extra)
        raise JudgeError(status, self.retries + 1, detail, replies)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
