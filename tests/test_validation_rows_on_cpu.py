"""Validation rows never wait for a group: verl's ``validate`` flag, not only ``extra_info.split``, sends a row
down the per-sample path, through the CoAct rollout worker's postprocess into the ``coact`` reward manager."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl import DataProto

from coact_verl.adapters import agent_loop, reward_manager
from coact_verl.adapters.agent_loop import CoActAgentLoopWorker
from coact_verl.adapters.reward_manager import CoActRewardManager
from coact_verl.records import VALIDATE_KEY, ResponseInfo

CONFIG = OmegaConf.create(
    {"actor_rollout_ref": {"rollout": {"n": 4}}, "coact": {"consistency": {"use_math_verify": False}}}
)


class CharTokenizer:
    """Token id = character code."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids)


class GateThatMustNotBeUsed:
    def __init__(self):
        self.calls = 0

        async def arrive(*args, **kwargs):
            self.calls += 1
            await asyncio.sleep(0)
            return ResponseInfo.incomplete()

        self.arrive = SimpleNamespace(remote=arrive)


@pytest.fixture()
def gate(monkeypatch):
    fake = GateThatMustNotBeUsed()
    monkeypatch.setattr(reward_manager, "gate_handle", lambda config: fake)
    return fake


def _manager() -> CoActRewardManager:
    return CoActRewardManager(CONFIG, CharTokenizer())


def _row_as_verl_scores_it(kwargs: dict, response: str) -> DataProto:
    """What verl's ``AgentLoopWorker._compute_score`` sends the reward worker for one session."""
    tok = CharTokenizer()
    prompts = torch.tensor([tok.encode("Q?")])
    responses = torch.tensor([tok.encode(response)])
    input_ids = torch.cat([prompts, responses], dim=1)
    batch = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.arange(input_ids.shape[1])[None],
        },
        batch_size=1,
    )
    non_tensor = {k: np.array([v]) for k, v in kwargs.items()}
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def _session_kwargs(extra_info: dict, session_id: int = 0) -> dict:
    return {
        "uid": "u1",
        "session_id": session_id,
        "global_steps": 3,
        "extra_info": extra_info,
        "reward_model": {"ground_truth": "42", "style": "rule"},
        "raw_prompt": [{"role": "user", "content": "Q?"}],
    }


def _validate_through_the_worker(monkeypatch, extra_info: dict, response: str) -> dict:
    """Run the worker's postprocess with verl's ``validate=True``; verl's base postprocess scores the row."""
    manager = _manager()
    seen = {}

    async def base_postprocess(self, output, validate, **kwargs):
        seen["kwargs"] = kwargs
        seen["result"] = await manager.run_single(_row_as_verl_scores_it(kwargs, response))

    monkeypatch.setattr(agent_loop._BASE, "_agent_loop_postprocess", base_postprocess)
    worker = SimpleNamespace(_pending={})
    start = time.monotonic()
    manager.loop.run_until_complete(  # the reward worker's event loop, as in verl
        CoActAgentLoopWorker._agent_loop_postprocess(worker, object(), True, **_session_kwargs(extra_info))
    )
    seen["seconds"] = time.monotonic() - start
    return seen


@pytest.mark.parametrize("extra_info", [{"index": 0}, {"index": 0, "split": "train"}, {}])
def test_a_validation_row_without_an_eval_split_is_scored_alone_at_once(monkeypatch, gate, extra_info):
    seen = _validate_through_the_worker(monkeypatch, dict(extra_info), "so #### 42")
    assert gate.calls == 0, "a validation row went to the group gate"
    assert seen["seconds"] < 5.0
    info = seen["result"]["reward_extra_info"]
    assert seen["result"]["reward_score"] == 1.0 and info["acc"] == 1.0 and info["pred"] == "42"
    assert seen["kwargs"]["extra_info"][VALIDATE_KEY] is True

    wrong = _validate_through_the_worker(monkeypatch, dict(extra_info), "so #### 41")
    assert wrong["result"]["reward_score"] == 0.0 and wrong["result"]["reward_extra_info"]["pred"] == "41"


def test_the_prompt_dict_shared_by_sessions_is_not_modified(monkeypatch, gate):
    extra = {"index": 7}
    _validate_through_the_worker(monkeypatch, extra, "#### 42")
    assert extra == {"index": 7}


def test_training_rows_still_meet_in_the_gate(gate):
    """The drop-in path: a training row (no validation marker, no eval split) goes to the group gate."""
    manager = _manager()
    result = manager.loop.run_until_complete(
        manager.run_single(_row_as_verl_scores_it(_session_kwargs({"index": 0}), "#### 42"))
    )
    assert gate.calls == 1 and result["reward_extra_info"]["coact_route"] == "incomplete"


def test_an_eval_split_alone_still_marks_a_validation_row(gate):
    kwargs = _session_kwargs({"index": 0, "split": "test"})
    manager = _manager()
    result = manager.loop.run_until_complete(manager.run_single(_row_as_verl_scores_it(kwargs, "#### 42")))
    assert gate.calls == 0 and result["reward_score"] == 1.0
