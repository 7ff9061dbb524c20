"""CoAct's added work for one training step, router side: clustering, embedding, routing, feedback, metrics.

Builds ``prompts x n`` GSM8K-format responses from real GSM8K (test) problems (the gold answer, one of the
solution's own intermediate results as a shared wrong answer, a random number, or no final answer), then
times, for one step:

* clustering: ``score_groups`` (extraction + canonical clustering; ``--math-verify`` adds the verify pool);
* embedding: the hashing embedder on the prompts;
* routing: one :class:`~coact_verl.router.Router` shared by ``--workers`` threads that stream their share
  of the step's groups through ``route_online`` under one lock (as a single shared router would serve
  the rollout workers), with a reference set of ``--reference`` verified prompts;
* feedback: ``Router.observe`` for every oracle-routed group (simulated oracle from the gold);
* metrics: ``Router.metrics``.

The oracle round trips over HTTP are not part of this benchmark (see ``bench_oracle.py``).

Run: ``python benchmarks/bench_group_step.py [--prompts 1024 --n 16 --workers 8 --policy coact]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from coact_verl.config import ConsistencyConfig, RouterConfig  # noqa: E402
from coact_verl.consistency import AnswerClusterer, score_groups  # noqa: E402
from coact_verl.router import GroupView, HashingEmbedder, Router  # noqa: E402


def _groups(data: Path, prompts: int, n: int, seed: int) -> list[tuple[str, list[str], str]]:
    rng = random.Random(seed)
    rows = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    out = []
    for i in range(prompts):
        row = rows[i % len(rows)]
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        inter = re.findall(r"=\s*(-?\d+)>>", row["answer"]) or [str(int(float(gold)) + 1)]
        p, wrong = rng.betavariate(2, 2), rng.choice(inter)
        reasoning = row["answer"].split("####")[0]
        responses = []
        for _ in range(n):
            u = rng.random()
            answer = gold if u < p else wrong if u < p + 0.6 * (1 - p) else str(rng.randint(1, 999))
            responses.append(f"{reasoning}\n#### {answer}" if rng.random() > 0.05 else reasoning)
        out.append((row["question"], responses, gold))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--policy", default="coact")
    parser.add_argument("--reference", type=int, default=4096)
    parser.add_argument("--math-verify", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()

    groups = _groups(args.data, args.prompts, args.n, args.seed)
    times: dict[str, float] = {}
    start = time.perf_counter()
    with AnswerClusterer(ConsistencyConfig(task="gsm8k", use_math_verify=args.math_verify)) as clusterer:
        stats = score_groups([responses for _, responses, _ in groups], "gsm8k", clusterer)
    times["clustering"] = time.perf_counter() - start

    start = time.perf_counter()
    embedder = HashingEmbedder()
    emb = embedder.encode([question for question, _, _ in groups])
    times["embedding"] = time.perf_counter() - start

    router = Router(RouterConfig(policy=args.policy, audit_share=0.05))
    rng = np.random.default_rng(args.seed)
    router.add_verified(
        embedder.encode([f"reference question {i} {rng.integers(10**6)}" for i in range(args.reference)])
    )
    lock = threading.Lock()
    views = [
        GroupView(
            s.agreement,
            embedding=e,
            prompt_id=str(i),
            task="gsm8k",
            runner_up=s.cluster_sizes[1] / s.n if len(s.cluster_sizes) > 1 else 0.0,
        )
        for i, (s, e) in enumerate(zip(stats, emb, strict=True))
    ]
    routes: list = [None] * len(views)

    def worker(w: int) -> None:
        for i in range(w, len(views), args.workers):
            with lock:
                routes[i] = router.route_online(views[i])

    start = time.perf_counter()
    router.begin_step(len(views))
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(worker, range(args.workers)))
    times["routing"] = time.perf_counter() - start

    start = time.perf_counter()
    for view, route, s, (_, _, gold) in zip(views, routes, stats, groups, strict=True):
        if route.is_oracle:
            majority_ok = s.majority_answer is not None and s.majority_answer == gold
            router.observe(view, route, majority_ok, gold in s.cluster_answers)
    times["feedback"] = time.perf_counter() - start

    start = time.perf_counter()
    metrics = router.metrics()
    times["metrics"] = time.perf_counter() - start
    spent = sum(r.is_oracle for r in routes)
    print(
        json.dumps(
            {
                "prompts": args.prompts,
                "n": args.n,
                "workers": args.workers,
                "policy": args.policy,
                "oracle_routed": spent,
                "budget": int(0.2 * args.prompts),
                "seconds": {k: round(v, 4) for k, v in times.items()},
                "total_seconds": round(sum(times.values()), 3),
                "metric_keys": len(metrics),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
