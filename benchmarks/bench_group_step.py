"""CoAct's added wall time for one training step, as training does it: the group step of every rollout worker
against one shared router and a real oracle service over HTTP, then the trainer's step-end metrics.

Data: ``prompts x n`` GSM8K-format responses built from real GSM8K (test) problems (the gold answer, one of the
solution's own intermediate results as a shared wrong answer, a random number, or no final answer); each step takes
the next ``prompts`` problems. The gold answers of the whole test set go to the service as its gold file (jsonl,
``prompt_id`` + ``answer``).

Set-up (not timed): the real oracle service (``gold`` backend, SQLite in a temp dir) is started as a subprocess
(:func:`~coact_verl.oracle.local.start_local_service`), and the trainer's start-up handshake
(:func:`~coact_verl.oracle.client.handshake`) opens this run in it and gives the ``run_id`` every client sends.
``--workers`` :class:`~coact_verl.group.labeler.GroupLabeler`\\ s, each as in one rollout worker (its own clusterer,
embedder and oracle client), share one router: a :class:`~coact_verl.router.LocalRouter` over one
:class:`~coact_verl.router.RouterService` in this process (in training the job's router is a named Ray actor,
``coact_verl.adapters.router_actor``, reached over Ray; that hop is not measured here). The router's k-NN reference
set starts with ``--reference`` embedded GSM8K train questions, as a run some steps in would have it.

One step, all in one asyncio event loop (the workers are coroutines, not threads or processes; clustering runs in
the loop's default thread pool, as in a rollout worker):

1. the trainer moves the oracle run to the step (``POST /v1/runs/step``) and announces the step to the router
   (``begin_step``: the step's oracle share, ``oracle_share_per_step`` of the groups, default 0.2);
2. every worker labels its share of the groups (group ``i`` goes to worker ``i mod workers``) with ``--in-flight``
   groups in flight (0: all of them at once, as verl's agent-loop worker runs all of its prompts concurrently):
   ``GroupLabeler.label`` (extract + cluster, embed, route, ask the oracle over HTTP, observe, score) and the
   per-response ``reward_extra_info`` (:meth:`~coact_verl.records.ResponseInfo.to_extra_info`);
3. the trainer's step-end work: :func:`~coact_verl.metrics.step_metrics` without gold, the router's metrics
   (``RouterHook``) and the oracle budget (``GET /v1/budget``, ``MetricsHook``).

``added_wall_s`` is the wall time of 1-3. In training, 2 overlaps the rollout (a group is labelled as soon as
its n responses are in), so this is an upper bound of what CoAct adds to a step. Gold-checked metrics
(``step_metrics`` with the gold answers and the trainer's clusterer as equivalence) are timed separately and not
counted: they measure, and must not sit on the trainer's critical path.

The parts (sums over calls that overlap in time, so they can add up to more than the wall time):

* clustering: ``score_groups`` (extraction + clustering) as run in its worker thread, wall and thread CPU; the
  label path (``label_clusters``, an oracle answer outside the candidates) likewise;
* embedding: the prompt embedder; routing: ``route`` and ``observe`` of the shared router (on the event loop);
* oracle: each ``OracleClient.query`` round trip, sum and p50/p99/max per query;
* metrics: ``step_metrics`` without gold, router metrics, the budget call; gold metrics separately.

CPU seconds: this process (all threads) and the service subprocess with its children (``psutil``), per step.
The parts are measured by wrapping the labellers' embedder, router and oracle client and by wrapping
``coact_verl.consistency.groups.score_groups``/``label_clusters`` in this process; the library is unchanged.
Goal: ``added_wall_s`` at most 10 s for 1,024 x 16 with 8 workers on 2 cores.

Run: ``python benchmarks/bench_group_step.py [--prompts 1024 --n 16 --workers 8 --policy coact --steps 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from coact_verl.config import CoActConfig, ConsistencyConfig, OracleConfig, RouterConfig  # noqa: E402
from coact_verl.consistency import AnswerClusterer  # noqa: E402
from coact_verl.consistency import groups as consistency_groups  # noqa: E402
from coact_verl.group.labeler import GroupLabeler, GroupOutcome, GroupRequest  # noqa: E402
from coact_verl.metrics import step_metrics  # noqa: E402
from coact_verl.oracle.client import OracleClient, handshake  # noqa: E402
from coact_verl.oracle.local import start_local_service, stop_local_service  # noqa: E402
from coact_verl.router import LocalRouter, RouterService, make_embedder  # noqa: E402

GOAL_S = 10.0
BUDGET_TOTAL = 1_000_000  # labels the run may spend: never the limit here, the per-step share is


def _gold_of(row: dict[str, str]) -> str:
    return row["answer"].split("####")[-1].strip().replace(",", "")


def _groups(
    rows: list[dict[str, str]], prompts: int, n: int, seed: int, start: int = 0
) -> list[tuple[str, str, list[str], str]]:
    """``(prompt_id, question, responses (n,), gold)`` for ``prompts`` problems from row ``start`` on (cycling)."""
    rng = random.Random(seed)
    out = []
    for i in range(prompts):
        index = (start + i) % len(rows)
        row = rows[index]
        gold = _gold_of(row)
        inter = re.findall(r"=\s*(-?\d+)>>", row["answer"]) or [str(int(float(gold)) + 1)]
        p, wrong = rng.betavariate(2, 2), rng.choice(inter)
        reasoning = row["answer"].split("####")[0]
        responses = []
        for _ in range(n):
            u = rng.random()
            answer = gold if u < p else wrong if u < p + 0.6 * (1 - p) else str(rng.randint(1, 999))
            responses.append(f"{reasoning}\n#### {answer}" if rng.random() > 0.05 else reasoning)
        out.append((f"gsm8k-test-{index}", row["question"], responses, gold))
    return out


class Timings:
    """Per-part call durations in seconds (and thread CPU seconds where measured) of one step."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, float] = {}

    def add(self, part: str, seconds: float, cpu_s: float | None = None) -> None:
        self.wall.setdefault(part, []).append(seconds)
        if cpu_s is not None:
            self.cpu[part] = self.cpu.get(part, 0.0) + cpu_s

    def summary(self, part: str, percentiles: bool = False) -> dict[str, Any]:
        calls = self.wall.get(part, [])
        out: dict[str, Any] = {"calls": len(calls), "sum_s": round(sum(calls), 4)}
        if part in self.cpu:
            out["thread_cpu_s"] = round(self.cpu[part], 4)
        if percentiles and calls:
            ordered = sorted(calls)
            out["p50_ms"] = round(1e3 * statistics.median(ordered), 2)
            out["p99_ms"] = round(1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)
            out["max_ms"] = round(1e3 * ordered[-1], 2)
        return out


def _timed_in_thread(fn: Callable[..., Any], part: str, timings: list[Timings]) -> Callable[..., Any]:
    """``fn`` recording its wall and thread CPU seconds (it runs in a worker thread) into ``timings[0]``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[0].add(part, time.perf_counter() - start, time.thread_time() - cpu)

    return timed


class _TimedEmbedder:
    def __init__(self, inner: Any, timings: list[Timings]) -> None:
        self.inner, self.timings = inner, timings

    def encode(self, texts: Sequence[str]) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.encode(texts)
        finally:
            self.timings[0].add("embedding", time.perf_counter() - start)


class _TimedRouter:
    """The shared :class:`LocalRouter` as every labeller sees it, timing ``route`` and ``observe``."""

    def __init__(self, inner: LocalRouter, timings: list[Timings]) -> None:
        self.inner, self.timings = inner, timings

    async def route(self, view: Any, step: int) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.route(view, step)
        finally:
            self.timings[0].add("route", time.perf_counter() - start)

    async def observe(self, view: Any, route: Any, majority_correct: bool, labeled: bool, task: str) -> None:
        start = time.perf_counter()
        try:
            await self.inner.observe(view, route, majority_correct, labeled, task)
        finally:
            self.timings[0].add("observe", time.perf_counter() - start)


class _TimedOracle:
    """A labeller's :class:`OracleClient`, timing each query round trip (the client bounds it by ``max_wait_s``)."""

    def __init__(self, inner: OracleClient, timings: list[Timings]) -> None:
        self.inner, self.timings = inner, timings
        self.statuses: dict[str, int] = {}

    async def query(self, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = await self.inner.query(**kwargs)
        self.timings[0].add("oracle", time.perf_counter() - start)
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cpu_s(procs: dict[int, psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds by pid (processes that ended are left out)."""
    out = {}
    for pid, proc in procs.items():
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[pid] = times.user + times.system
    return out


def _service_procs(pid: int) -> dict[int, psutil.Process]:
    """The service process and its children (uvicorn workers, math-verify lanes)."""
    root = psutil.Process(pid)
    return {p.pid: p for p in [root, *root.children(recursive=True)]}


async def _step(
    step: int,
    groups: list[tuple[str, str, list[str], str]],
    labelers: list[GroupLabeler],
    service: RouterService,
    trainer_oracle: OracleClient,
    trainer_clusterer: AnswerClusterer,
    gold: dict[str, str],
    in_flight: int,
    service_pid: int,
    timings: list[Timings],
) -> dict[str, Any]:
    """One training step's CoAct work (module docstring); returns its figures."""
    timings[0] = Timings()
    oracles: list[_TimedOracle] = [labeler.oracle_client() for labeler in labelers]
    for oracle in oracles:
        oracle.statuses.clear()
    me = psutil.Process()
    procs = _service_procs(service_pid)
    cpu_me, cpu_service = me.cpu_times(), _cpu_s(procs)
    workers = len(labelers)
    outcomes: list[GroupOutcome | None] = [None] * len(groups)
    infos: list[list[dict[str, Any]]] = [[] for _ in groups]

    async def label_one(labeler: GroupLabeler, i: int) -> None:
        prompt_id, question, responses, _ = groups[i]
        request = GroupRequest(prompt_id, question, "gsm8k", step, tuple(responses))
        outcomes[i] = await labeler.label(request)
        start = time.perf_counter()
        infos[i] = [info.to_extra_info() for info in outcomes[i].response_infos(prompt_id)]
        timings[0].add("extra_info", time.perf_counter() - start)

    async def worker(w: int) -> None:
        share = range(w, len(groups), workers)
        gate = asyncio.Semaphore(in_flight or len(share) or 1)

        async def gated(i: int) -> None:
            async with gate:
                await label_one(labelers[w], i)

        await asyncio.gather(*(gated(i) for i in share))

    seconds: dict[str, float] = {}
    step_start = time.perf_counter()
    start = step_start
    moved = await trainer_oracle.set_step(step)
    if moved is None:
        raise RuntimeError("the oracle service did not take the step (POST /v1/runs/step failed)")
    seconds["oracle_set_step"] = time.perf_counter() - start
    start = time.perf_counter()
    service.begin_step(step, len(groups))
    seconds["router_begin_step"] = time.perf_counter() - start

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    seconds["labelling_wall"] = time.perf_counter() - start

    flat = [info for rows in infos for info in rows]
    uids = [groups[i][0] for i, rows in enumerate(infos) for _ in rows]
    start = time.perf_counter()
    metrics = step_metrics(flat, uids)
    seconds["step_metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    router_metrics = service.metrics()
    seconds["router_metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    budget = await trainer_oracle.budget()
    seconds["oracle_budget"] = time.perf_counter() - start
    added = time.perf_counter() - step_start
    cpu_me_after, cpu_service_after = me.cpu_times(), _cpu_s(procs | _service_procs(service_pid))

    # off the critical path: measurement against the gold answers
    start = time.perf_counter()
    gold_metrics = step_metrics(flat, uids, gold=gold, same=lambda pairs: trainer_clusterer.same_many(pairs))
    gold_s = time.perf_counter() - start

    t = timings[0]
    statuses: dict[str, int] = {}
    for oracle in oracles:
        for status, count in oracle.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    routes: dict[str, int] = {}
    for i, outcome in enumerate(outcomes):
        if outcome is None:
            raise RuntimeError(f"group {groups[i][0]} was not labelled")
        routes[outcome.route] = routes.get(outcome.route, 0) + 1
    service_cpu = sum(cpu_service_after.values()) - sum(cpu_service.get(pid, 0.0) for pid in cpu_service_after)
    return {
        "step": step,
        "added_wall_s": round(added, 3),
        "goal_met": added <= GOAL_S,
        "wall_s": {key: round(value, 4) for key, value in seconds.items()},
        "parts": {
            "clustering": t.summary("clustering"),
            "label_clusters": t.summary("label_clusters"),
            "embedding": t.summary("embedding"),
            "routing": t.summary("route"),
            "router_observe": t.summary("observe"),
            "oracle_round_trips": t.summary("oracle", percentiles=True),
            "extra_info": t.summary("extra_info"),
        },
        "gold_metrics_off_critical_path_s": round(gold_s, 4),
        "cpu_s": {
            "this_process": round(cpu_me_after.user + cpu_me_after.system - cpu_me.user - cpu_me.system, 3),
            "oracle_service": round(service_cpu, 3),
        },
        "routes": routes,
        "oracle_statuses": statuses,
        "labelled_by_oracle": statuses.get("labeled", 0),
        "oracle_budget": budget,
        "metric_keys": {"trainer": len(metrics) + len(router_metrics), "gold": len(gold_metrics) - len(metrics)},
        "gold_metrics": {k: round(v, 4) for k, v in gold_metrics.items() if k not in metrics},
    }


async def _run(args: argparse.Namespace, url: str, token: str, run_id: int, gold_path: str, service_pid: int) -> Any:
    rows = [json.loads(line) for line in (args.data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    gold = {f"gsm8k-test-{i}": _gold_of(row) for i, row in enumerate(rows)}
    config = CoActConfig(
        consistency=ConsistencyConfig(task="gsm8k", use_math_verify=args.math_verify),
        router=RouterConfig(policy=args.policy),
        oracle=OracleConfig(url=url, token=token, run_id=run_id, budget_total=BUDGET_TOTAL, gold_path=gold_path),
    )
    timings = [Timings()]
    service = RouterService(config.router, budget_total=BUDGET_TOTAL)
    train = [json.loads(line)["question"] for line in (args.data / "gsm8k" / "train.jsonl").read_text().splitlines()]
    if args.reference:
        reference = random.Random(args.seed).sample(train, min(args.reference, len(train)))
        service.router.add_verified(make_embedder(config.router.embedder).encode(reference))
    shared = _TimedRouter(LocalRouter(service), timings)
    labelers = [GroupLabeler(config, oracle_url=url, router=shared) for _ in range(args.workers)]
    for labeler in labelers:
        labeler.embedder = _TimedEmbedder(labeler.embedder, timings)
        labeler._oracle = _TimedOracle(labeler.oracle_client(), timings)  # the client it made, timed
    trainer_oracle = OracleClient.from_config(config.oracle)
    trainer_clusterer = AnswerClusterer(config.consistency)
    score, label = consistency_groups.score_groups, consistency_groups.label_clusters
    consistency_groups.score_groups = _timed_in_thread(score, "clustering", timings)
    consistency_groups.label_clusters = _timed_in_thread(label, "label_clusters", timings)
    steps = []
    try:
        for step in range(1, args.steps + 1):
            groups = _groups(rows, args.prompts, args.n, args.seed + step, start=(step - 1) * args.prompts)
            steps.append(
                await _step(
                    step,
                    groups,
                    labelers,
                    service,
                    trainer_oracle,
                    trainer_clusterer,
                    gold,
                    args.in_flight,
                    service_pid,
                    timings,
                )
            )
    finally:
        consistency_groups.score_groups, consistency_groups.label_clusters = score, label
        for labeler in labelers:
            await labeler.aclose()
        await trainer_oracle.aclose()
        trainer_clusterer.close()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024, help="groups per step")
    parser.add_argument("--n", type=int, default=16, help="responses per group")
    parser.add_argument("--workers", type=int, default=8, help="rollout workers (labellers sharing one router)")
    parser.add_argument("--in-flight", type=int, default=0, help="groups in flight per worker; 0: its whole share")
    parser.add_argument("--policy", default="coact")
    parser.add_argument("--reference", type=int, default=4096, help="k-NN reference prompts the router starts with")
    parser.add_argument("--math-verify", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=2, help="training steps (the first pays the warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    if min(args.prompts, args.n, args.workers, args.steps) < 1 or args.in_flight < 0 or args.reference < 0:
        parser.error("--prompts, --n, --workers and --steps must be >= 1; --in-flight and --reference >= 0")
    try:
        RouterConfig(policy=args.policy)
    except ValueError as error:
        parser.error(str(error))
    test_file = args.data / "gsm8k" / "test.jsonl"
    if not test_file.is_file():
        parser.error(f"no GSM8K test file at {test_file} (--data names the folder holding gsm8k/)")

    load_before = os.getloadavg()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bench-group-step-") as tmp:
        gold_path = Path(tmp) / "gold.jsonl"
        with gold_path.open("w") as out:
            for i, line in enumerate(test_file.read_text().splitlines()):
                out.write(json.dumps({"prompt_id": f"gsm8k-test-{i}", "answer": _gold_of(json.loads(line))}) + "\n")
        log_path = Path(tmp) / "oracle.log"
        url, proc = start_local_service(
            str(Path(tmp) / "oracle.sqlite"),
            gold_path=str(gold_path),
            trainer_token=token,
            budget_total=BUDGET_TOTAL,
            log_path=str(log_path),
        )
        try:
            info = handshake(
                url,
                token,
                budget_total=BUDGET_TOTAL,
                run_name="bench/group-step",
                samples_per_prompt=args.n,
                request_timeout_s=5.0,
            )
            steps = asyncio.run(_run(args, url, token, int(info["run"]["id"]), str(gold_path), proc.pid))
        except BaseException:
            print(f"oracle service log ({log_path}):\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop_local_service(proc)
    print(
        json.dumps(
            {
                "prompts": args.prompts,
                "n": args.n,
                "workers": args.workers,
                "in_flight_per_worker": args.in_flight or "all",
                "policy": args.policy,
                "math_verify": args.math_verify,
                "reference": args.reference,
                "concurrency": "one asyncio loop: workers are coroutines; clustering in the loop's thread pool",
                "router": "one LocalRouter(RouterService) shared in-process (training: a named Ray actor)",
                "oracle": f"real service, gold backend, HTTP on loopback, run {info['run']['id']}",
                "cpu_count": os.cpu_count(),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "goal_s": GOAL_S,
                "notes": "parts are sums over calls that overlap in time; an oracle round trip includes waiting"
                " for this process's busy event loop (the service's own work is its CPU seconds)",
                "steps": steps,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
