"""Oracle service throughput on loopback: 64 concurrent clients, distinct queries, a label budget.

Starts a real service (uvicorn subprocess, SQLite file in a temp dir) per server setting, drives it from a
separate load process with lightweight keep-alive HTTP/1.1 connections, and prints requests/s, p50/p99 latency
and budget overruns (labels granted beyond the budget; must be 0). With ``--client httpx`` the load comes from
:class:`~coact_verl.oracle.OracleClient` instead, to show what a trainer process gets.

    python benchmarks/bench_oracle.py                     # all settings, 64 clients, 6000 queries each
    python benchmarks/bench_oracle.py --settings inline --requests 20000
    python benchmarks/bench_oracle.py --rate 2000           # open loop: latency at a fixed offered load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import queue
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from coact_verl.oracle import OracleClient, start_local_service, stop_local_service

TOKEN, ADMIN = "bench-trainer", "bench-admin"
SETTINGS = {
    "inline": [],
    "inline-no-fast-path": ["--no-fast-path"],
    "inline-sync-full": ["--db-synchronous", "FULL"],
    "db-threads": ["--db-threads"],
    "2-workers": ["--workers", "2"],
    "inline-h11-asyncio": ["--http", "h11", "--loop", "asyncio"],
}


def _body(i: int, run: str) -> bytes:
    return json.dumps(
        {
            "key": f"{run}-{i}",
            "prompt_id": f"p{i % 1000}",
            "prompt": f"Natalia sold clips to {i} of her friends. How many clips did she sell?",
            "task": "gsm8k",
            "step": i // 256,
            "candidates": [
                {"answer": str(i % 1000), "response": "She sold ... #### " + str(i % 1000), "votes": 5},
                {"answer": "7", "response": "Wrong reasoning ... #### 7", "votes": 3},
            ],
        }
    ).encode()


async def _raw_load(
    port: int, requests: int, concurrency: int, run: str, rate: float = 0.0
) -> tuple[list[float], dict[str, int], float]:
    """Keep-alive HTTP/1.1 clients written on asyncio streams: little client CPU per request.

    ``rate`` 0: closed loop, each client sends its next request when the last one is answered (saturation).
    ``rate`` > 0: open loop at ``rate`` requests/s in total; latency counts from the scheduled send time, so a
    slow server cannot hide its queueing delay.
    """
    next_i = iter(range(requests))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    interval = concurrency / rate if rate > 0 else 0.0
    begin = time.perf_counter() + 0.2

    async def worker(c: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        scheduled = begin + c * interval / concurrency
        for i in next_i:
            body = _body(i, run)
            if interval:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            head = (
                f"POST /v1/queries HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = scheduled if interval else time.perf_counter()
            scheduled += interval
            writer.write(head + body)
            response = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(h.split(b":")[1]) for h in response.split(b"\r\n") if h.lower().startswith(b"content-length")
            )
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not response.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(response + payload)
            status = json.loads(payload)["status"]
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(worker(c) for c in range(concurrency)))
    return latencies, statuses, time.perf_counter() - min(begin, time.perf_counter())


async def _httpx_load(url: str, requests: int, concurrency: int, run: str) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_i = iter(range(requests))
    # One client, as in a trainer process: ``concurrency`` callers share its (default-sized) connection pool.
    async with OracleClient(url, TOKEN, request_timeout_s=10, max_wait_s=30) as client:

        async def worker() -> None:
            for i in next_i:
                result = await client.query(**json.loads(_body(i, run)))
                latencies.append(result.elapsed_s)
                statuses[result.status] = statuses.get(result.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - start


def _load_process(kind: str, url: str, requests: int, concurrency: int, run: str, rate: float, out: mp.Queue) -> None:
    port = int(url.rsplit(":", 1)[1])
    if kind == "raw":
        out.put(asyncio.run(_raw_load(port, requests, concurrency, run, rate)))
    else:
        out.put(asyncio.run(_httpx_load(url, requests, concurrency, run)))


def _result(loader: mp.process.BaseProcess, out: mp.Queue, timeout_s: float = 600.0) -> tuple:
    """The load process's result; fails fast if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=1.0)
        except queue.Empty:
            if not loader.is_alive():
                raise RuntimeError(f"load process exited with code {loader.exitcode}") from None
    raise TimeoutError("load process took too long")


def bench(name: str, extra: list[str], args: argparse.Namespace) -> dict[str, float | int | str]:
    """One server setting: warm up, then the measured run; returns the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-oracle-"))
    gold = tmp / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt_id": f"p{i}", "answer": str(i)}) + "\n" for i in range(1000)))
    budget = int(args.requests * args.budget_share)
    url, proc = start_local_service(
        str(tmp / "oracle.sqlite"),
        trainer_token=TOKEN,
        admin_token=ADMIN,
        gold_path=str(gold),
        budget_total=budget + args.warmup,
        extra_args=["--equivalence", "exact", *extra],
        log_path=str(tmp / "oracle.log"),
    )
    try:
        ctx = mp.get_context("spawn")
        for run, count, rate in (("warmup", args.warmup, 0.0), ("run", args.requests, args.rate)):
            out: mp.Queue = ctx.Queue()
            load_args = (args.client, url, count, args.concurrency, run, rate, out)
            loader = ctx.Process(target=_load_process, args=load_args)
            cpu_before = _cpu_s(proc.pid)
            loader.start()
            latencies, statuses, elapsed = _result(loader, out)
            cpu = _cpu_s(proc.pid) - cpu_before
            loader.join(30)
        spent = asyncio.run(_spent(url))
    finally:
        stop_local_service(proc)
    lat_ms = sorted(x * 1e3 for x in latencies)
    labeled = statuses.get("labeled", 0)
    return {
        "setting": name + (f"@{args.rate:g}/s" if args.rate else ""),
        "req_per_s": round(len(lat_ms) / elapsed),
        "p50_ms": round(statistics.median(lat_ms), 2),
        "p99_ms": round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 2),
        "labeled": labeled,
        "over_budget": statuses.get("over_budget", 0),
        "budget": budget,
        "overruns": max(0, labeled - budget) + max(0, spent - (budget + args.warmup)),
        "server_cpu_us_per_req": round(cpu / len(lat_ms) * 1e6),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the service and its worker processes."""
    total = 0.0
    parent = psutil.Process(pid)
    for p in [parent, *parent.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


async def _spent(url: str) -> int:
    async with OracleClient(url, ADMIN) as admin:
        return (await admin.budget())["spent"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--requests", type=int, default=6000, help="measured queries per setting (distinct keys)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured queries first")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (one connection each)")
    parser.add_argument("--budget-share", type=float, default=0.8, help="budget as a share of --requests")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator")
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop offered load in req/s (0: closed loop)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting")
    args = parser.parse_args()
    rows = []
    for name in args.settings:
        for _ in range(args.repeat):
            row = bench(name, SETTINGS[name], args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = f"{'setting':<26} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'labeled':>8} {'budget':>7} {'overruns':>8}"
    print(f"\n{head} {'server CPU µs/req':>18}")
    for r in rows:
        print(
            f"{r['setting']:<26} {r['req_per_s']:>7} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['labeled']:>8} "
            f"{r['budget']:>7} {r['overruns']:>8} {r['server_cpu_us_per_req']:>18}"
        )
    return 1 if any(r["overruns"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
