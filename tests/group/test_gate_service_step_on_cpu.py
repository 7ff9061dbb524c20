"""The reward gate moves the oracle service's run from step to step, so a per-step label budget is per step."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest

from coact_verl.config import CoActConfig, OracleConfig, RouterConfig
from coact_verl.group.gate import Arrival, RewardGate
from coact_verl.oracle.local import start_local_service, stop_local_service
from coact_verl.records import PromptRow

TOKEN = "trainer-test-token"
GOLD = {f"p{i}": str(100 + i) for i in range(8)}


@pytest.fixture
def service(tmp_path: Path):
    """A real gold oracle service with a per-step budget of 1 label and no total cap: ``url``."""
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt_id": k, "answer": v}) + "\n" for k, v in GOLD.items()))
    url, proc = start_local_service(
        str(tmp_path / "oracle.sqlite"),
        gold_path=str(gold),
        trainer_token=TOKEN,
        extra_args=["--budget-per-step", "1"],
        log_path=str(tmp_path / "oracle.log"),
    )
    yield url
    stop_local_service(proc)


def _config() -> CoActConfig:
    return CoActConfig(
        router=RouterConfig(policy="gold_all"),  # every group asks the oracle
        oracle=OracleConfig(token=TOKEN, request_timeout_s=2.0, max_wait_s=5.0, retries=0),
    )


async def _group(gate: RewardGate, prompt: str, step: int) -> str:
    """Gather a two-response group of prompt ``prompt`` at training ``step``; the group's oracle status."""
    row = PromptRow.from_row({"extra_info": {"prompt_id": prompt, "question": f"question {prompt}"}})
    responses = [f"#### {GOLD[prompt]}", "#### 7"]
    infos = await asyncio.gather(
        *(gate.arrive(f"uid-{prompt}-{step}", i, 2, Arrival(text, row, step)) for i, text in enumerate(responses))
    )
    assert all(info.group_complete for info in infos)
    return infos[0].oracle_status


def test_each_training_step_gets_its_own_per_step_budget(service):
    async def run() -> tuple[list[str], dict, int]:
        gate = RewardGate(_config(), service)
        try:
            statuses = [await _group(gate, "p0", 1), await _group(gate, "p1", 1)]  # step 1 spends its one label
            statuses.append(await _group(gate, "p2", 2))  # a new step: one more label
            statuses.append(await _group(gate, "p3", 1))  # a late group of step 1 does not move the run back
            async with httpx.AsyncClient(base_url=service, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                budget = (await http.get("/v1/budget", timeout=5)).json()
            return statuses, budget, gate.service_step
        finally:
            await gate.labeler.aclose()

    statuses, budget, service_step = asyncio.run(run())
    assert statuses[0] == "labeled" and statuses[1] != "labeled", statuses  # the cap of 1 per step holds
    assert statuses[2] == "labeled", statuses  # step 2 spends again after step 1 spent its cap
    assert statuses[3] != "labeled", statuses  # charged to step 2, which has spent its label too
    assert budget["spent"] == 2 and budget["per_step"] == 1, budget
    assert service_step == 2


def test_an_unreachable_service_counts_the_failed_step_and_does_not_hang():
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = CoActConfig(
        router=RouterConfig(policy="gold_all"),
        oracle=OracleConfig(token=TOKEN, request_timeout_s=0.2, max_wait_s=1.0, retries=1),
    )

    async def run() -> tuple[list[str], int]:
        gate = RewardGate(config, f"http://127.0.0.1:{port}")
        try:
            statuses = [await _group(gate, "p0", 1), await _group(gate, "p1", 1), await _group(gate, "p2", 2)]
            return statuses, gate.step_failures
        finally:
            await gate.labeler.aclose()

    statuses, failures = asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert statuses == ["unavailable"] * 3
    assert failures == 2  # one try per new step, not one per group
