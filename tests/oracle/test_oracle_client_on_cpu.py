"""The client when the oracle is down, hung, dripping bytes or failing: bounded waits, nothing raised."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from oracle_testlib import ADMIN, TRAINER, free_port, query_body

from coact_verl.config import OracleConfig
from coact_verl.oracle import OracleClient, SyncOracleClient, make_key
from coact_verl.oracle.client import OracleSetupError, handshake
from coact_verl.oracle.local import stop_local_service

SLACK_S = 0.5  # scheduling slack on a loaded 2-core machine


async def _timed_query(client: OracleClient, i: int = 1):
    start = time.monotonic()
    result = await client.query(**query_body(i))
    return result, time.monotonic() - start


async def test_down_service_is_unavailable_fast():
    client = OracleClient(f"http://127.0.0.1:{free_port()}", TRAINER, request_timeout_s=0.5, max_wait_s=1.0, retries=3)
    result, elapsed = await _timed_query(client)
    assert result.status == "unavailable" and result.label is None and "Connect" in result.error
    assert result.attempts == 4 and elapsed < 1.0 + SLACK_S
    assert client.stats.unavailable == 1 and client.stats.retries == 3
    assert await client.budget() is None and not await client.healthy()
    await client.aclose()


async def test_hung_service_is_bounded_and_recovers(service_factory):
    svc = service_factory()
    client = OracleClient(svc.url, TRAINER, request_timeout_s=0.3, max_wait_s=1.0, retries=10)
    assert (await client.query(**query_body(1))).status == "labeled"
    os.kill(svc.proc.pid, signal.SIGSTOP)  # accepts connections (kernel backlog) but never answers
    try:
        result, elapsed = await _timed_query(client, 2)
        assert result.status == "unavailable"
        assert 0.9 < elapsed < 1.0 + SLACK_S, elapsed
        assert result.attempts >= 2
    finally:
        os.kill(svc.proc.pid, signal.SIGCONT)
    result = await client.query(**query_body(2))
    assert result.status == "labeled"  # the same key goes through once the service answers again
    await client.aclose()


@pytest.fixture
async def raw_server() -> AsyncIterator:
    """``start(handler)`` runs an asyncio TCP server on 127.0.0.1 with the given connection handler."""
    servers = []

    async def start(handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def test_dripping_response_is_cut_at_max_wait(raw_server):
    """Per-read timeouts never fire on a response that trickles in; the overall bound must."""

    async def drip(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        for _ in range(100):
            writer.write(b"X-Pad: 1\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()

    url = await raw_server(drip)
    client = OracleClient(url, TRAINER, request_timeout_s=5.0, max_wait_s=0.8, retries=2)
    result, elapsed = await _timed_query(client)
    assert result.status == "unavailable" and elapsed < 0.8 + SLACK_S, (result, elapsed)
    await client.aclose()


async def test_5xx_is_retried_then_unavailable(raw_server):
    hits = []

    async def fail(reader, writer):
        while await reader.read(65536):
            hits.append(1)
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    url = await raw_server(fail)
    client = OracleClient(url, TRAINER, request_timeout_s=0.5, max_wait_s=3.0, retries=2, backoff_s=0.05)
    result, elapsed = await _timed_query(client)
    assert result.status == "unavailable" and "503" in result.error
    assert len(hits) == 3 and result.attempts == 3 and elapsed < 1.0
    await client.aclose()


async def test_4xx_is_not_retried(service_factory):
    svc = service_factory()
    client = OracleClient(svc.url, "wrong-token", retries=3)
    result = await client.query(**query_body(1))
    assert result.status == "unavailable" and "401" in result.error and result.attempts == 1
    await client.aclose()


def test_sync_client(service_factory):
    svc = service_factory("--budget-total", "1")
    with SyncOracleClient(svc.url, TRAINER, max_wait_s=5) as client:
        assert client.healthy()
        assert client.query(**query_body(1)).status == "labeled"
        assert client.query(**query_body(2)).status == "over_budget"
        assert [r["key"] for r in client.labels()["labels"]] == ["k1"]
        assert client.budget()["remaining"] == 0
        assert client.set_budget(5) is None  # trainer token: refused, reported as None, not raised
    with SyncOracleClient(svc.url, ADMIN) as admin:
        assert admin.set_budget(5)["remaining"] == 4
        assert admin.upload_gold({"new": "1"})["written"] == 1
    with SyncOracleClient(f"http://127.0.0.1:{free_port()}", TRAINER, max_wait_s=0.5, retries=1) as down:
        start = time.monotonic()
        assert down.query(**query_body(1)).status == "unavailable"
        assert time.monotonic() - start < 0.5 + SLACK_S


def test_make_key_is_stable_and_distinct():
    assert make_key("p", 1, ["a", "b"]) == make_key("p", 1, ["a", "b"])
    assert len({make_key("p", 1, ["a", "b"]), make_key("p", 2, ["a", "b"]), make_key("p", 1, ["b", "a"])}) == 3


# -- start-up handshake, tokens and per-run databases -------------------------------------------------------------


def _setup_error(fn, *args, **kwargs) -> str:
    with pytest.raises(OracleSetupError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_handshake_reports_backend_gold_and_budget(service_factory):
    svc = service_factory("--budget-total", "5", "--budget-per-step", "2")
    info = handshake(svc.url, TRAINER, budget_total=5)
    assert (info["role"], info["backend"], info["needs_gold"], info["gold"]) == ("trainer", "gold", True, 400)
    assert info["budget"] == {"total": 5, "spent": 0, "remaining": 5, "per_step": 2}
    assert handshake(svc.url, TRAINER)["budget"]["total"] == 5  # no expectation: read from the service


def test_handshake_names_the_fix_for_a_bad_token(service_factory):
    svc = service_factory()
    for token in ("wrong-token", None, ""):
        message = _setup_error(handshake, svc.url, token)
        assert "COACT_ORACLE_TRAINER_TOKEN" in message and "coact.oracle.token" in message, message
    assert "401" in _setup_error(handshake, svc.url, "wrong-token")
    assert "403" in _setup_error(handshake, svc.url, ADMIN)  # a valid token, but not the trainer's


def test_handshake_names_the_fix_for_an_unreachable_url():
    start = time.monotonic()
    message = _setup_error(handshake, f"http://127.0.0.1:{free_port()}", TRAINER, wait_s=0.5)
    assert "cannot reach" in message and "coact.oracle.url" in message and "--host 0.0.0.0" in message
    assert time.monotonic() - start < 0.5 + 5 * SLACK_S


def test_handshake_refuses_a_gold_backend_without_gold_and_a_budget_mismatch(service_factory):
    bare = service_factory(gold=False, name="bare")
    assert "--gold" in _setup_error(handshake, bare.url, TRAINER)
    assert handshake(service_factory(backend="human", gold=False, name="human").url, TRAINER)["backend"] == "human"
    svc = service_factory("--budget-total", "5")
    message = _setup_error(handshake, svc.url, TRAINER, budget_total=7)
    assert "coact.oracle.budget_total=7" in message and "coact.oracle.budget_total=5" in message, message


def test_no_public_default_token(monkeypatch):
    monkeypatch.delenv("COACT_ORACLE_TRAINER_TOKEN", raising=False)
    assert OracleConfig().token is None and OracleConfig().resolved_token() is None
    monkeypatch.setenv("COACT_ORACLE_TRAINER_TOKEN", "from-env")
    assert OracleConfig().resolved_token() == "from-env"
    assert OracleConfig(token="from-config").resolved_token() == "from-config"


def test_serve_without_a_trainer_token_generates_and_prints_one(tmp_path, gold_file, monkeypatch):
    monkeypatch.delenv("COACT_ORACLE_TRAINER_TOKEN", raising=False)
    port_file = tmp_path / "port"
    cmd = [sys.executable, "-m", "coact_verl.oracle", "serve", "--db", str(tmp_path / "o.sqlite"), "--port", "0"]
    cmd += ["--port-file", str(port_file), "--gold", str(gold_file)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"generated trainer token: (\S+)", line)
        assert match, line
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert handshake(url, match.group(1))["role"] == "trainer"
        assert "401" in _setup_error(handshake, url, "coact-trainer")  # the old public default opens nothing
    finally:
        stop_local_service(proc)


@pytest.fixture
def trainer_side(monkeypatch):
    """``ensure_oracle_service`` with a clean per-process cache; stops every service it started."""
    from coact_verl.oracle import job as oracle_service

    monkeypatch.setattr(oracle_service, "_checked", {})
    monkeypatch.setattr(oracle_service, "_started", [])
    monkeypatch.delenv("COACT_ORACLE_TRAINER_TOKEN", raising=False)
    yield oracle_service
    for proc in oracle_service._started:
        stop_local_service(proc)


def _job_config(tmp_path, experiment="exp", **oracle):
    from omegaconf import OmegaConf

    trainer = {"nnodes": oracle.pop("nnodes", 1), "default_local_dir": str(tmp_path / "ckpt"), "resume_mode": "auto",
               "project_name": "proj", "experiment_name": experiment}  # fmt: skip
    oracle_section = {"url": None, "token": None, "db_path": None, "gold_path": None, "budget_total": None, **oracle}
    return OmegaConf.create({"trainer": trainer, "coact": {"oracle": oracle_section}})


def test_trainer_with_a_wrong_or_missing_token_stops_at_start_up(trainer_side, service_factory, tmp_path):
    svc = service_factory()
    for token in ("wrong-token", None):
        message = _setup_error(trainer_side.ensure_oracle_service, _job_config(tmp_path, url=svc.url, token=token))
        assert "COACT_ORACLE_TRAINER_TOKEN" in message, message
    config = _job_config(tmp_path, url=svc.url, token=TRAINER)
    assert trainer_side.ensure_oracle_service(config) == svc.url


def test_trainer_reads_the_token_from_the_environment_and_the_budget_from_the_service(
    trainer_side, service_factory, tmp_path, monkeypatch
):
    svc = service_factory("--budget-total", "9")
    monkeypatch.setenv("COACT_ORACLE_TRAINER_TOKEN", TRAINER)
    config = _job_config(tmp_path, url=svc.url)
    assert trainer_side.ensure_oracle_service(config) == svc.url
    # written back for the workers built later, on any node
    assert config.coact.oracle.token == TRAINER and config.coact.oracle.budget_total == 9


def test_local_service_on_several_nodes_stops_the_run(trainer_side, tmp_path):
    message = _setup_error(trainer_side.ensure_oracle_service, _job_config(tmp_path, nnodes=2))
    assert "trainer.nnodes=2" in message and "coact.oracle.url=http://HOST:8765" in message
    assert not trainer_side._started


def test_local_service_has_a_random_token_and_a_database_per_run(trainer_side, tmp_path, gold_file):
    config = _job_config(tmp_path, gold_path=str(gold_file), budget_total=3)
    url = trainer_side.ensure_oracle_service(config)
    token, db = config.coact.oracle.token, tmp_path / "ckpt" / "oracle.sqlite"
    assert token and token != "coact-trainer" and config.coact.oracle.db_path == str(db) and db.exists()
    with SyncOracleClient(url, token, run_id=config.coact.oracle.run_id) as client:
        assert client.query(**query_body(1)).status == "labeled"
    again = _job_config(tmp_path, gold_path=str(gold_file), budget_total=3)
    trainer_side.ensure_oracle_service(again)
    assert again.coact.oracle.token != token  # a new token for every run
    stop_local_service(trainer_side._started.pop())
    stop_local_service(trainer_side._started.pop())
    # a fresh run (no checkpoint in the run's folder) sets the old database aside: nothing is inherited
    trainer_side._checked.clear()
    fresh = _job_config(tmp_path, gold_path=str(gold_file), budget_total=3)
    url = trainer_side.ensure_oracle_service(fresh)
    with SyncOracleClient(url, fresh.coact.oracle.token, run_id=fresh.coact.oracle.run_id) as client:
        assert client.budget()["spent"] == 0 and client.labels()["labels"] == []
    assert len(list((tmp_path / "ckpt").glob("oracle.*.sqlite"))) >= 1
    stop_local_service(trainer_side._started.pop())
    # a resumed run (verl finds a checkpoint there) continues its own budget and label log
    trainer_side._checked.clear()
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("1")
    resumed = _job_config(tmp_path, gold_path=str(gold_file), budget_total=3)
    resumed_url = trainer_side.ensure_oracle_service(resumed)
    with SyncOracleClient(resumed_url, resumed.coact.oracle.token, run_id=resumed.coact.oracle.run_id) as client:
        assert client.query(**query_body(2)).status == "labeled"
    trainer_side._checked.clear()
    stop_local_service(trainer_side._started.pop())
    again = _job_config(tmp_path, gold_path=str(gold_file), budget_total=3)
    url = trainer_side.ensure_oracle_service(again)
    with SyncOracleClient(url, again.coact.oracle.token, run_id=again.coact.oracle.run_id) as client:
        assert client.budget()["spent"] == 1 and [r["key"] for r in client.labels()["labels"]] == ["k2"]


def test_two_jobs_against_one_service_each_get_their_own_run(trainer_side, service_factory, tmp_path):
    """Two trainers (experiments a and b) against one service: their own runs, budgets and labels; a fresh start of
    a opens a new run, a resumed a (a checkpoint in its folder) continues it."""
    svc = service_factory("--budget-total", "2")
    jobs = {name: _job_config(tmp_path / name, experiment=name, url=svc.url, token=TRAINER) for name in "ab"}
    for job in jobs.values():
        assert trainer_side.ensure_oracle_service(job) == svc.url
    run_a, run_b = (jobs[name].coact.oracle.run_id for name in "ab")
    assert run_a and run_b and run_a != run_b
    with SyncOracleClient(svc.url, TRAINER, run_id=run_a) as a, SyncOracleClient(svc.url, TRAINER, run_id=run_b) as b:
        assert [a.query(**query_body(i)).status for i in (1, 2, 3)] == ["labeled", "labeled", "over_budget"]
        assert b.query(**query_body(1)).status == "labeled" and b.budget()["spent"] == 1
        assert [r["key"] for r in b.labels()["labels"]] == ["k1"]
    trainer_side._checked.clear()  # a new trainer process of job a, started fresh
    fresh = _job_config(tmp_path / "a", experiment="a", url=svc.url, token=TRAINER)
    trainer_side.ensure_oracle_service(fresh)
    assert fresh.coact.oracle.run_id not in (run_a, run_b)
    with SyncOracleClient(svc.url, TRAINER, run_id=fresh.coact.oracle.run_id) as client:
        assert client.budget()["spent"] == 0 and client.labels()["labels"] == []
    trainer_side._checked.clear()  # and once more, now resuming from a checkpoint
    (tmp_path / "a" / "ckpt").mkdir(parents=True, exist_ok=True)
    (tmp_path / "a" / "ckpt" / "latest_checkpointed_iteration.txt").write_text("1")
    resumed = _job_config(tmp_path / "a", experiment="a", url=svc.url, token=TRAINER)
    trainer_side.ensure_oracle_service(resumed)
    assert resumed.coact.oracle.run_id == fresh.coact.oracle.run_id
