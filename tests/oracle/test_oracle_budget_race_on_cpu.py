"""64 concurrent requesters against a budget of B labels: exactly B are granted, every time."""

from __future__ import annotations

import asyncio

import pytest
from oracle_testlib import ADMIN, TRAINER, query_body

from coact_verl.oracle import OracleClient

B, QUERIES, REQUESTERS, ROUNDS = 50, 200, 64, 3


async def _round(clients: list[OracleClient], offset: int) -> list[str]:
    """REQUESTERS clients (one connection each) share QUERIES distinct queries; returns the statuses."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(QUERIES):
        jobs.put_nowait(offset + i)
    statuses: list[str] = []
    start = asyncio.Event()

    async def requester(client: OracleClient) -> None:
        await start.wait()
        while not jobs.empty():
            i = jobs.get_nowait()
            body = query_body(i % 400, key=f"r{offset}-{i}")
            result = await client.query(**body)
            statuses.append(result.status)

    tasks = [asyncio.create_task(requester(client)) for client in clients]
    await asyncio.sleep(0.05)
    start.set()
    await asyncio.gather(*tasks)
    return statuses


MODES = {
    "one-transaction": ["--equivalence", "exact"],  # charge and label in one transaction, on the event loop
    "two-phase-threads": ["--db-threads"],  # charge, check in a thread, store the label; SQLite from a thread pool
    "2-workers": ["--workers", "2"],  # two processes writing one database
}


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
async def test_exactly_b_labels_under_64_requesters(service_factory, mode):
    svc = service_factory("--budget-total", str(B), *mode)
    clients = [
        OracleClient(svc.url, TRAINER, request_timeout_s=20, max_wait_s=30, max_connections=1) for _ in range(64)
    ]
    async with OracleClient(svc.url, ADMIN) as admin:
        for r in range(ROUNDS):
            if r:
                spent = (await admin.budget())["spent"]
                assert spent == r * B
                assert (await admin.set_budget(spent + B))["remaining"] == B
            statuses = await _round(clients, offset=r * QUERIES)
            assert len(statuses) == QUERIES
            assert statuses.count("labeled") == B, statuses
            assert statuses.count("over_budget") == QUERIES - B
            budget = await admin.budget()
            assert budget["spent"] == (r + 1) * B and budget["remaining"] == 0
        labels = (await admin.labels(0, 5000))["labels"]
        assert len(labels) == ROUNDS * B == len({rec["key"] for rec in labels})
    for client in clients:
        await client.aclose()
