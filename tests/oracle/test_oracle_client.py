"""The client when the oracle is down, hung, dripping bytes or failing: bounded waits, nothing raised."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from oracle_testlib import ADMIN, TRAINER, free_port, query_body

from coact_verl.oracle import OracleClient, SyncOracleClient, make_key

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
