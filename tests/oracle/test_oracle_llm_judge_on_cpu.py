"""The LLM-judge backend against a real OpenAI-compatible HTTP server; and inside the service."""

from __future__ import annotations

import asyncio
import time

import pytest
from oracle_testlib import ADMIN, TRAINER, FakeJudge, query_body

from coact_verl.oracle import OracleClient
from coact_verl.oracle.backends import BackendError, Candidate, LabelQuery
from coact_verl.oracle.backends.llm_judge import JudgeError, LLMJudgeBackend, build_messages, parse_verdict


def _query(gold="12"):
    cands = (Candidate("12", "so 12", 3), Candidate("13", "so 13", 1))
    return LabelQuery(1, "k", "p", "What is 3*4?", "gsm8k", 0, cands, gold)


def test_parse_verdict():
    assert parse_verdict('```json\n{"correct": [true, false], "answer": 3}\n```', 2) == ((True, False), "3")
    for bad in ('{"correct": [true]}', '{"correct": [1, 0]}', "[true, false]", "nope"):
        with pytest.raises(ValueError):
            parse_verdict(bad, 2)


def test_parse_verdict_reads_what_small_models_write():
    prose = 'Sure! Here is my verdict:\n{"correct": [false, true], "answer": "12"}\nHope this helps.'
    assert parse_verdict(prose, 2) == ((False, True), "12")
    wrong_then_right = '{"correct": [true]} no: {"correct": [true, false], "answer": null}'
    assert parse_verdict(wrong_then_right, 2) == ((True, False), None)
    assert parse_verdict('{"correct": [true, false}, "answer": "12"}', 2) == ((True, False), "12")  # typo'd bracket
    with pytest.raises(ValueError, match="2 booleans"):
        parse_verdict('{"correct": [true, false, true}', 2)


def test_prompt_shows_worked_examples():
    messages = build_messages(_query(), "12")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert all(len(parse_verdict(m["content"], 2)[0]) == 2 for m in messages if m["role"] == "assistant")
    assert all("Reference" in m["content"] for m in messages if m["role"] == "user")
    assert not any("Reference" in m["content"] for m in build_messages(_query(), None))  # a blind judge's examples
    assert len(build_messages(_query(), "12", few_shot=False)) == 2


async def test_judge_labels_with_reference_and_hides_its_answer():
    with FakeJudge() as judge:
        backend = LLMJudgeBackend(judge.url, "m", api_key="k", timeout_s=5, retries=0)
        result = await backend.label(_query())
        await backend.aclose()
    assert result.correct == (True, False) and result.answer == "12" and result.source == "llm_judge"
    request = judge.calls[0]
    assert request["model"] == "m" and request["response_format"] == {"type": "json_object"}
    assert "Reference answer (ground truth):\n12" in request["messages"][-1]["content"]


async def test_blind_judge_answer_is_used_when_no_candidate_is_correct():
    with FakeJudge() as judge:
        backend = LLMJudgeBackend(judge.url, "m", timeout_s=5, retries=0, with_gold=False)
        result = await backend.label(_query())
        await backend.aclose()
    assert result.correct == (False, False) and result.answer == "judge-answer"
    assert "Reference" not in judge.calls[0]["messages"][-1]["content"]


async def test_judge_retries_errors_and_bad_json():
    with FakeJudge(["500", "garbage", "ok"]) as judge:
        backend = LLMJudgeBackend(judge.url, "m", timeout_s=5, retries=2, backoff_s=0.01)
        result = await backend.label(_query())
        await backend.aclose()
    assert result.correct == (True, False) and len(judge.calls) == 3 and result.extra["attempts"] == 3


async def test_judge_reports_no_verdict_after_its_retries():
    with FakeJudge(["garbage", "garbage"]) as judge:
        backend = LLMJudgeBackend(judge.url, "m", timeout_s=5, retries=1, backoff_s=0.01)
        with pytest.raises(JudgeError, match=r"\[no_verdict\] after 2 attempts") as info:
            await backend.label(_query())
        await backend.aclose()
    assert info.value.status == "no_verdict" and info.value.replies == ("not json", "not json")
    first, retry = judge.calls  # the retry reminds the judge of the format and samples afresh
    assert first["temperature"] == 0.0 and "seed" not in first
    assert retry["temperature"] == 0.7 and retry["seed"] == 1
    assert retry["messages"][:-1] == first["messages"][:-1]
    assert retry["messages"][-1]["content"].startswith(first["messages"][-1]["content"])
    assert "not a valid verdict" in retry["messages"][-1]["content"]


async def test_judge_gives_up_within_its_bounds():
    with FakeJudge(["slow", "slow", "slow"], slow_s=1.5) as judge:
        backend = LLMJudgeBackend(judge.url, "m", timeout_s=0.3, retries=1, backoff_s=0.01)
        start = time.monotonic()
        with pytest.raises(BackendError, match="2 attempts") as info:
            await backend.label(_query())
        assert isinstance(info.value, JudgeError) and info.value.status == "timeout"
        assert time.monotonic() - start < 0.3 * 2 + 0.5
        await backend.aclose()
    with FakeJudge(["400"]) as judge:
        backend = LLMJudgeBackend(judge.url, "m", timeout_s=5, retries=3, backoff_s=0.01)
        with pytest.raises(BackendError, match="refused") as info:
            await backend.label(_query())
        assert isinstance(info.value, JudgeError) and info.value.status == "refused"
        assert len(judge.calls) == 1  # a client error is not retried
        await backend.aclose()


def test_service_with_judge_refunds_failures(service_factory):
    with FakeJudge(["500", "500"]) as judge:
        args = ("--judge-url", judge.url, "--judge-retries", "1", "--judge-timeout", "5", "--budget-total", "3")
        svc = service_factory(*args, backend="llm_judge")
        with svc.client() as c:
            failed = c.post("/v1/queries", json=query_body(1)).json()
            assert failed["status"] == "failed" and failed["budget"]["spent"] == 0  # refunded
            ok = c.post("/v1/queries", json=query_body(1)).json()  # same key, judge healthy again
            assert ok["status"] == "labeled" and ok["label"]["correct"] == [True, False]
            assert ok["label"]["source"] == "llm_judge" and ok["budget"]["spent"] == 1
            assert c.post("/v1/queries", json=query_body(1)).json() == ok
            with svc.client(ADMIN) as admin:
                admin.post("/v1/gold", json={"p9999": "5"})
            blind = c.post("/v1/queries", json={**query_body(2), "prompt_id": "no-gold-here"}).json()
            assert blind["status"] == "labeled" and blind["label"]["answer"] == "judge-answer"


async def test_concurrent_retries_share_one_judge_call(service_factory):
    """A client that re-sends a key while the slow judge works gets the same label; the judge is asked once."""
    with FakeJudge(["slow"], slow_s=1.0) as judge:
        svc = service_factory("--judge-url", judge.url, "--judge-timeout", "5", backend="llm_judge")
        async with OracleClient(svc.url, TRAINER, request_timeout_s=5, max_wait_s=10) as client:
            results = await asyncio.gather(*(client.query(**query_body(1)) for _ in range(5)))
            assert {r.status for r in results} == {"labeled"}
            assert len({r.label for r in results}) == 1
            assert len(judge.calls) == 1 and (await client.budget())["spent"] == 1
