"""The rollout worker's group request marks the responses the rollout cut at its length limit."""

from __future__ import annotations

from types import SimpleNamespace

from coact_verl.adapters.agent_loop import group_request
from coact_verl.data.tiny import train_chat_tokenizer
from coact_verl.group.labeler import response_finished, stop_token_ids

CORPUS = ["Tom has 3 apples and buys 4 more. #### 7", "First, 4 * 3 = 12 eggs, then #### 15"] * 20


def test_response_finished():
    assert response_finished([5, 6, 7], 8, {2})  # shorter than the limit: it stopped on its own
    assert response_finished([5, 6, 2], 3, {2})  # at the limit, but on an end-of-turn token
    assert not response_finished([5, 6, 7], 3, {2})  # cut at the limit
    assert not response_finished([], 0, {2})


def test_group_request_marks_responses_cut_at_the_limit(tmp_path):
    tokenizer = train_chat_tokenizer(tmp_path / "tok", CORPUS)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    finished = tokenizer.encode("#### 15", add_special_tokens=False) + [eos]
    cut = tokenizer.encode("First, 4 * 3 = 12 eggs, then", add_special_tokens=False)
    limit = len(cut)
    sessions = [
        ([SimpleNamespace(response_ids=ids)], {"global_steps": 3, "extra_info": {"prompt_id": "p1"}})
        for ids in (finished, cut, cut[:-1])
    ]
    request = group_request("uid", sessions, tokenizer, "gsm8k", limit, stop_token_ids(tokenizer))
    assert request.finished == (True, False, True)
    assert request.responses[1] == tokenizer.decode(cut, skip_special_tokens=True)
    assert request.prompt_id == "p1" and request.step == 3


def test_stop_token_ids_of_tokenizers_with_and_without_special_ids(tmp_path):
    tokenizer = train_chat_tokenizer(tmp_path / "tok", CORPUS)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tokenizer)
    assert stop_token_ids(SimpleNamespace(eos_token_id=2)) == {2}
    assert stop_token_ids(SimpleNamespace()) == frozenset()
