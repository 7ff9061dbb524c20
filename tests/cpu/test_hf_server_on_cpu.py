"""The ``hf`` generation server on a real tiny model (in-process, without Ray)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from coact_verl.cpu.hf_server import HFGenerationServer


@pytest.fixture(scope="module")
def server(tiny_assets):
    return HFGenerationServer(str(tiny_assets["model"]), prompt_length=64, response_length=12)


def _prompt(tiny_assets) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Ava has 3 pens."}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_batched_sampling_respects_limits_and_reports_logprobs(server, tiny_assets):
    prompt = _prompt(tiny_assets)

    async def sample_many():
        params = [{"temperature": 1.0, "logprobs": True, "max_tokens": 1 + i % 5} for i in range(8)]
        return await asyncio.gather(*[server.generate(prompt, p, request_id=str(i)) for i, p in enumerate(params)])

    outputs = asyncio.run(sample_many())
    for i, output in enumerate(outputs):
        assert 1 <= len(output.token_ids) <= 1 + i % 5
        assert len(output.log_probs) == len(output.token_ids)
        assert all(lp <= 0 for lp in output.log_probs)
        assert output.extra_fields == {"global_steps": None}


def test_greedy_logprobs_match_a_direct_forward_pass(server, tiny_assets):
    prompt = _prompt(tiny_assets)
    output = asyncio.run(server.generate(prompt, {"temperature": 0, "logprobs": True, "max_tokens": 6}, "g"))
    model = AutoModelForCausalLM.from_pretrained(tiny_assets["model"], dtype=torch.float32).eval()
    ids = torch.tensor([prompt + output.token_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
    expected = logps.gather(-1, torch.tensor(output.token_ids).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(torch.tensor(output.log_probs), expected, atol=1e-4)
    assert output.token_ids == logps.argmax(-1).tolist()


def test_weight_update_changes_generation_and_step_is_reported(server, tiny_assets):
    prompt = _prompt(tiny_assets)
    greedy = {"temperature": 0, "max_tokens": 6}
    before = asyncio.run(server.generate(prompt, dict(greedy), "a")).token_ids
    state = {
        k: torch.zeros_like(v)
        for k, v in server.model.state_dict().items()
        if k.endswith("lm_head.weight") or "embed_tokens" in k
    }
    bias = state[next(iter(state))]
    bias[before[0] - 1 if before[0] > 0 else 1] = 1.0  # an embedding/head row that now dominates
    asyncio.run(server.update_weights(state))
    asyncio.run(server.set_global_steps(7))
    after = asyncio.run(server.generate(prompt, dict(greedy), "b"))
    assert after.token_ids != before and after.extra_fields["global_steps"] == 7
    with pytest.raises(KeyError, match="not in the rollout model"):
        asyncio.run(server.update_weights({"no.such.weight": torch.zeros(1)}))


def test_prompt_longer_than_the_context_is_refused(server):
    with pytest.raises(ValueError, match="leaves no room"):
        asyncio.run(server.generate(list(range(1, 80)), {"max_tokens": 4}, "long"))
