"""Oracle service throughput on loopback: 64 concurrent clients, distinct queries, a label budget.

Starts a real service (uvicorn subprocess, SQLite file in a temp dir) per server setting, drives it from a
separate load process with lightweight keep-alive HTTP/1.1 connections, and prints requests/s, p50/p99 latency
and budget overruns (labels granted beyond the budget; must be 0). Queries go to a run opened by the start-up
handshake and name it in their ``X-CoAct-Run`` header, as a trainer's do. With ``--client httpx`` the load comes from
:class:`~coact_verl.oracle.OracleClient` instead, to show what a trainer process gets.

Baseline, measured in the same run: ``floor``, a bare uvicorn endpoint that reads the same request and answers a
fixed label, is the ceiling of HTTP on this machine with this client; every setting prints its throughput as a
ratio of it. ``commit-per-query`` is the service without group commit (one transaction per query).
The target (64 clients: at least 2,000 requests/s with p99 at most 20 ms) is checked twice for the default
setting: closed loop (each client sends when answered: saturation) and open loop at 2,000 requests/s offered.

    python benchmarks/bench_oracle.py                     # all settings, 64 clients, 10000 queries each
    python benchmarks/bench_oracle.py --settings floor inline --requests 20000 --repeat 3
    python benchmarks/bench_oracle.py --settings inline --rate 2000   # open loop at a fixed offered load only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import uvloop

from coact_verl.oracle import OracleClient, start_local_service, stop_local_service
from coact_verl.oracle.client import handshake
from coact_verl.oracle.service.run_store import RUN_HEADER

TOKEN, ADMIN = "bench-trainer", "bench-admin"
TARGET_RATE, TARGET_P99_MS = 2000, 20.0
FLOOR = "floor"
SETTINGS = {
    FLOOR: [],
    "inline": [],
    "commit-per-query": ["--commit-batch", "1"],
    # the service's default equivalence (canonical forms, math-verify when needed): answers checked in a thread,
    # charge and label in two transactions
    "consistency": ["--equivalence", "consistency"],
    "inline-no-fast-path": ["--no-fast-path"],
    "inline-sync-full": ["--db-synchronous", "FULL"],
    "db-on-loop": ["--no-db-threads"],  # SQLite on the event loop (the default runs it in worker threads)
    "2-workers": ["--workers", "2"],
    "inline-h11-asyncio": ["--http", "h11", "--loop", "asyncio"],
}


_FLOOR_REPLY = b'{"query_id":1,"status":"labeled","label":{"answer":"1","correct":[true,false],"source":"gold"}}'


async def floor_app(scope: dict, receive, send) -> None:  # noqa: ANN001 - ASGI
    """The baseline endpoint: read the whole request, answer a fixed label."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_FLOOR_REPLY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _FLOOR_REPLY})


def _serve_floor(port_file: str) -> None:
    """Run :func:`floor_app` on uvicorn with the service's defaults (uvloop, httptools), port written to a file."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn serves: the port is usable once announced
    Path(f"{port_file}.tmp").write_text(str(sock.getsockname()[1]))
    Path(f"{port_file}.tmp").rename(port_file)
    uvicorn.Server(uvicorn.Config(floor_app, log_level="warning", access_log=False)).run(sockets=[sock])


def _start_floor(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port_file = tmp / "port"
    proc = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("baseline server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{int(port_file.read_text())}", proc


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
    port: int, requests: int, concurrency: int, run: str, rate: float = 0.0, run_id: int | None = None
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
    run_header = "" if run_id is None else f"{RUN_HEADER}: {run_id}\r\n"
    opened = time.perf_counter()
    begin = opened + 0.2  # open loop: the first send; a closed loop sends at once and is timed from `opened`

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
                f"POST /v1/queries HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n{run_header}"
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
    return latencies, statuses, time.perf_counter() - (begin if interval else opened)


async def _httpx_load(
    url: str, requests: int, concurrency: int, run: str, run_id: int | None
) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_i = iter(range(requests))
    # One client, as in a trainer process: ``concurrency`` callers share its (default-sized) connection pool.
    async with OracleClient(url, TOKEN, request_timeout_s=10, max_wait_s=30, run_id=run_id) as client:

        async def worker() -> None:
            for i in next_i:
                result = await client.query(**json.loads(_body(i, run)))
                latencies.append(result.elapsed_s)
                statuses[result.status] = statuses.get(result.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - start


def _load_process(
    kind: str, url: str, requests: int, concurrency: int, run: str, rate: float, run_id: int | None, out: mp.Queue
) -> None:
    port = int(url.rsplit(":", 1)[1])
    if kind == "raw":  # on uvloop, like the service: the load generator should cost the shared cores little
        out.put(uvloop.run(_raw_load(port, requests, concurrency, run, rate, run_id)))
    else:
        out.put(asyncio.run(_httpx_load(url, requests, concurrency, run, run_id)))


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


def bench(name: str, extra: list[str], args: argparse.Namespace, rate: float) -> dict[str, float | int | str]:
    """One server setting: warm up, then the measured run (closed loop if ``rate`` is 0); returns the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-oracle-"))
    gold = tmp / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt_id": f"p{i}", "answer": str(i)}) + "\n" for i in range(1000)))
    budget = int(args.requests * args.budget_share)
    if name == FLOOR:
        url, proc = _start_floor(tmp)
    else:
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
        # the trainer's path: a run opened by the handshake, named in every query's X-CoAct-Run header
        run_id = None if name == FLOOR else int(handshake(url, TOKEN, run_name=f"bench/{name}")["run"]["id"])
        ctx = mp.get_context("spawn")
        for run, count, run_rate in (("warmup", args.warmup, 0.0), ("run", args.requests, rate)):
            out: mp.Queue = ctx.Queue()
            load_args = (args.client, url, count, args.concurrency, run, run_rate, run_id, out)
            loader = ctx.Process(target=_load_process, args=load_args)
            cpu_before = _cpu_s(proc.pid)
            loader.start()
            latencies, statuses, elapsed = _result(loader, out)
            cpu = _cpu_s(proc.pid) - cpu_before
            loader.join(30)
        spent = 0 if name == FLOOR else asyncio.run(_spent(url, run_id))
    finally:
        stop_local_service(proc)
    lat_ms = sorted(x * 1e3 for x in latencies)
    labeled = statuses.get("labeled", 0)
    if name == FLOOR:  # answers "labeled" without a budget
        labeled, budget = 0, 0
    return {
        "setting": name + (f"@{rate:g}/s" if rate else ""),
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


async def _spent(url: str, run_id: int | None) -> int:
    async with OracleClient(url, ADMIN, run_id=run_id) as admin:
        return (await admin.budget())["spent"]


def _verdict(row: dict) -> str:
    met = row["req_per_s"] >= TARGET_RATE * 0.99 and row["p99_ms"] <= TARGET_P99_MS
    return f"{row['setting']}: {row['req_per_s']} req/s, p99 {row['p99_ms']} ms -> {'met' if met else 'NOT met'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--requests", type=int, default=10000, help="measured queries per setting (distinct keys)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured queries first")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (one connection each)")
    parser.add_argument("--budget-share", type=float, default=0.8, help="budget as a share of --requests")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator")
    parser.add_argument("--rate", type=float, default=None, help="only open loop at this many req/s in total")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting")
    parser.add_argument("--serve-floor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        _serve_floor(args.serve_floor)
        return 0
    plan = [(name, args.rate or 0.0) for name in args.settings]
    if args.rate is None and "inline" in args.settings:
        plan.append(("inline", float(TARGET_RATE)))  # the target's operating point, open loop
    rows = []
    for _ in range(args.repeat):
        for name, rate in plan:
            row = bench(name, SETTINGS[name], args, rate)
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = f"{'setting':<26} {'req/s':>7} {'x floor':>7} {'p50 ms':>7} {'p99 ms':>7} {'labeled':>8} {'budget':>7}"
    print(f"\n{head} {'overruns':>8} {'server CPU µs/req':>18}")
    floor = None  # the baseline of the same repeat: the machine's speed drifts between repeats
    for r in rows:
        if r["setting"] == FLOOR:
            floor = r["req_per_s"]
        ratio = f"{r['req_per_s'] / floor:.2f}" if floor and "@" not in r["setting"] else "-"
        print(
            f"{r['setting']:<26} {r['req_per_s']:>7} {ratio:>7} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['labeled']:>8} "
            f"{r['budget']:>7} {r['overruns']:>8} {r['server_cpu_us_per_req']:>18}"
        )
    print(f"\ntarget, {args.concurrency} clients: >= {TARGET_RATE} req/s with p99 <= {TARGET_P99_MS:g} ms")
    for r in rows:
        if r["setting"].split("@")[0] == "inline":
            print("  " + _verdict(r))
    return 1 if any(r["overruns"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
