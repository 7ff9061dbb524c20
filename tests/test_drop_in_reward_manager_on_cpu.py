"""The drop-in ``coact`` reward manager's gate: the oracle start-up handshake, groups that meet and the numbering
of responses on the classic trainer; a real oracle service (HTTP, SQLite) where one is needed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from verl import DataProto

from coact_verl.adapters.classic import rows_for_the_reward_manager, session_ids
from coact_verl.adapters.reward_manager import GroupGate
from coact_verl.group.gate import Arrival, GateSetupError
from coact_verl.oracle.local import start_local_service, stop_local_service
from coact_verl.records import VALIDATE_KEY, PromptRow
from coact_verl.router import LocalRouter

TOKEN = "the-service-trainer-token"


def _job(tmp_path, **oracle) -> dict:
    """A stock verl job config with only the oracle settings of ``coact`` (what the gate receives)."""
    return {
        "actor_rollout_ref": {"rollout": {"n": 3}},
        "trainer": {"project_name": "p", "experiment_name": "e", "default_local_dir": str(tmp_path / "ckpt")},
        "coact": {"consistency": {"use_math_verify": False}, "oracle": oracle},
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A real oracle service with the gold backend and a gold answer for prompt ``p1``."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("service")
    gold = folder / "gold.parquet"
    pd.DataFrame({"prompt_id": ["p1"], "answer": ["42"]}).to_parquet(gold)
    url, proc = start_local_service(
        str(folder / "oracle.sqlite"), gold_path=str(gold), trainer_token=TOKEN, log_path=str(folder / "o.log")
    )
    yield url
    stop_local_service(proc)


def test_a_wrong_token_stops_the_gate_with_the_fix(service, tmp_path):
    gate = GroupGate(_job(tmp_path, url=service, token="not-the-token"))
    error = gate.ready()
    assert error is not None and "rejected the trainer token" in error and "COACT_ORACLE_TRAINER_TOKEN" in error
    arrival = Arrival("#### 42", PromptRow(prompt_id="p1", question="q", task="gsm8k"), 1)
    with pytest.raises(GateSetupError, match="rejected the trainer token"):  # every scored response says so
        asyncio.run(gate.arrive("u", 0, 3, arrival))


def test_an_unreachable_service_stops_the_gate_with_the_fix(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = GroupGate(_job(tmp_path, url=f"http://127.0.0.1:{port}", token=TOKEN)).ready()
    assert error is not None and "cannot reach" in error and "coact.oracle.url" in error


def test_a_stock_config_without_a_url_starts_a_service_that_needs_gold(tmp_path):
    """Stock config, default router: the gate starts a local gold service, which has no gold answers."""
    job = _job(tmp_path)
    del job["coact"]  # a stock verl config has no coact section at all
    error = GroupGate(job).ready()
    assert error is not None and "gold" in error and "coact.oracle.gold_path" in error


def test_after_the_handshake_the_oracle_labels_a_group(service, tmp_path):
    job = _job(tmp_path, url=service, token=TOKEN)
    job["coact"]["router"] = {"policy": "gold_all"}
    gate = GroupGate(job)
    assert gate.ready() is None
    row = PromptRow(prompt_id="p1", question="What is 6 x 7?", task="gsm8k")

    async def group():
        # responses arrive out of order; the session ids order the group
        answers = {2: "#### 41", 0: "#### 42", 1: "#### 40"}
        return await asyncio.gather(*(gate.arrive("u1", s, 3, Arrival(a, row, 1)) for s, a in answers.items()))

    by_session = dict(zip((2, 0, 1), asyncio.run(group()), strict=True))
    assert {info.route for info in by_session.values()} == {"oracle"}
    assert all(info.oracle_status == "labeled" and info.label == "42" for info in by_session.values())
    assert [by_session[s].reward for s in (0, 1, 2)] == [1.0, 0.0, 0.0]
    assert all(info.group_complete for info in by_session.values())


def test_a_missing_sibling_times_out_as_incomplete(tmp_path):
    job = _job(tmp_path)
    job["coact"]["router"] = {"policy": "self_only"}
    job["coact"]["group"] = {"reward_timeout_s": 0.2}
    gate = GroupGate(job)
    info = asyncio.run(gate.arrive("u", 0, 3, Arrival("#### 1", PromptRow(prompt_id="p", question="q", task=""), 1)))
    assert info.route == "incomplete" and info.reward == 0.0 and info.group_complete is False


def test_responses_without_session_ids_are_numbered_as_they_arrive(tmp_path):
    job = _job(tmp_path)
    job["coact"]["router"] = {"policy": "self_only"}
    gate = GroupGate(job)
    row = PromptRow(prompt_id="p", question="q", task="gsm8k")

    async def group():
        return await asyncio.gather(*(gate.arrive("u", None, 3, Arrival(f"#### {a}", row, 1)) for a in (7, 7, 8)))

    infos = asyncio.run(group())
    assert [i.reward for i in infos] == [1.0, 1.0, 0.0] and all(i.route == "self" for i in infos)
    assert gate._numbered == {}  # forgotten once the group was answered


def test_responses_cut_at_the_length_limit_vote_only_with_an_explicit_answer(tmp_path):
    job = _job(tmp_path)
    job["coact"]["router"] = {"policy": "self_only"}
    gate = GroupGate(job)
    row = PromptRow(prompt_id="p", question="q", task="gsm8k")
    arrivals = [Arrival("#### 7", row, 1), Arrival("3 + 5 = 8, then", row, 1, False), Arrival("so 8", row, 1)]

    async def group():
        return await asyncio.gather(*(gate.arrive("u", s, 3, a) for s, a in enumerate(arrivals)))

    infos = asyncio.run(group())  # read as finished, "3 + 5 = 8, then" would make 8 the majority
    assert all(i.route == "drop" for i in infos) and [i.reward for i in infos] == [0.0, 0.0, 0.0]


def _batch(uids: list[str], extra: list[dict], meta: dict) -> DataProto:
    n = len(uids)
    rows = {"uid": np.array(uids, dtype=object), "extra_info": np.empty(n, dtype=object)}
    rows["extra_info"][:] = extra
    return DataProto(
        batch=TensorDict({"input_ids": torch.zeros(n, 2, dtype=torch.long)}, batch_size=n),
        non_tensor_batch=rows,
        meta_info=meta,
    )


def test_session_ids_count_each_uid_from_zero():
    assert session_ids(["a", "a", "b", "a", "b"]).tolist() == [0, 1, 0, 2, 1]


def test_the_classic_adapter_marks_validation_batches_only():
    shared = {"index": 3}
    val = rows_for_the_reward_manager(_batch(["a", "a"], [shared, shared], {"validate": True, "global_steps": 5}))
    assert [e[VALIDATE_KEY] for e in val.non_tensor_batch["extra_info"]] == [True, True]
    assert val.non_tensor_batch["session_id"].tolist() == [0, 1]
    assert val.non_tensor_batch["global_steps"].tolist() == [5, 5]
    assert shared == {"index": 3}  # the trainer's rows are left as they are

    train = rows_for_the_reward_manager(_batch(["a", "b"], [{"index": 1}, {"index": 2}], {"global_steps": 2}))
    assert all(VALIDATE_KEY not in e for e in train.non_tensor_batch["extra_info"])
    assert train.non_tensor_batch["session_id"].tolist() == [0, 0]
    assert train.non_tensor_batch["global_steps"].tolist() == [2, 2]


def test_the_gate_tells_its_router_the_step_size_of_the_stock_trainer(service, tmp_path):
    """verl's stock trainer announces no step to CoAct's router: the gate gives it data.train_batch_size."""
    job = _job(tmp_path, url=service, token=TOKEN)
    job["data"] = {"train_batch_size": 48}
    router = GroupGate(job).labeler.router
    assert isinstance(router, LocalRouter) and router.service.groups_per_step == 48
    del job["data"]
    assert GroupGate(job).labeler.router.service.groups_per_step is None
