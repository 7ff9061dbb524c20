"""Group-signal throughput and accuracy against verl's per-sample math-verify reward path.

Builds ``prompts x n`` responses from real GSM8K (test) and MATH-500 problems: each response is the reference
solution's reasoning followed by a final answer that is either an equivalent rewrite of the gold answer
(``0.5`` / ``\\frac{1}{2}`` / ``1/2``, ``\\dfrac``, ``x = 3``, thousands commas, ``$``, ``\\sqrt{3}/2``,
reordered lists, ``\\boxed{}`` vs "The answer is", and free-form statements without a box: "Final Answer: The
final answer is $x$. I hope it is correct.", ``\\(x\\)``, ``\\[x\\]``, "So in total it comes to 18.") or a
wrong answer (perturbed numbers), or no final answer at all: reasoning cut off half-way, marked as cut at the
length limit, as the rollout reports it to training (verl's path gets the same text and no such flag). Whether
each response matches the gold is therefore known by construction.

Compared, in one run:
* verl: ``NaiveRewardManager.run_single`` with ``verl.utils.reward_score.math_verify.compute_score`` against
  the gold, one response at a time, all responses of the subset in flight concurrently (as verl's reward loop
  does); timed on a subset of prompts because it is slow.
* ours: ``score_groups`` (extraction, canonical fast path, math-verify in a hard-timeout pool) + the gold's
  cluster via ``label_clusters`` + ``rewards_for_cluster``, on all responses.

The three timed paths run ``--repeats`` times, interleaved, each time from cold (fresh math-verify workers and
empty caches on both sides; starting the workers is not timed on either side: verl's each score one answer, ours
import math-verify and warm the LaTeX parser on ``verify_worker.WARMUP_ANSWERS``, about a second each); the table
reports the median time of each, the ratios are those of the medians, and the per-repeat ratios are listed too, so
that load from other processes on a shared machine shows as spread rather than as a result. Each path's CPU time
(the calling process plus its math-verify workers, read from ``/proc``) is reported as well: on a shared machine
wall-clock ratios swing with the load, CPU seconds per response much less.

Run: ``python benchmarks/bench_consistency.py [--prompts 512 --n 16 --baseline-prompts 64 --workers 1 --repeats 3]``.
Data is read from ``../shared/data`` relative to the repository root (override with ``--data``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coact_verl.config import ConsistencyConfig  # noqa: E402
from coact_verl.consistency import AnswerClusterer, canonicalize, label_clusters, rewards_for_cluster  # noqa: E402
from coact_verl.consistency.canonical import _canonicalize  # noqa: E402
from coact_verl.consistency.groups import score_groups  # noqa: E402

canonical_cache_clear = _canonicalize.cache_clear

DEFAULT_DATA = REPO / ".." / "shared" / "data"


@dataclass
class Prompt:
    task: str  # "gsm8k" or "math"
    gold: str
    responses: list[str]
    truth: list[int]  # 1 if the response's final answer is equivalent to the gold
    finished: list[bool]  # False for a response the rollout cut at its length limit (training knows which)


# --------------------------------------------------------------------------- construction


def _load(data: Path) -> tuple[list[dict], list[dict]]:
    gsm = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").open(encoding="utf-8")]
    math500 = [json.loads(line) for line in (data / "math500" / "test.jsonl").open(encoding="utf-8")]
    return gsm, math500


def _fmt_number(v: Fraction) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def _terminating(v: Fraction) -> str | None:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    s = f"{float(v):.10f}".rstrip("0").rstrip(".")
    return s if Fraction(s) == v else None


def _number_forms(v: Fraction, rng: random.Random, task: str) -> str:
    """An equivalent written form of the number ``v``."""
    forms = [_fmt_number(v)]
    if v.denominator == 1:
        n = v.numerator
        if abs(n) >= 1000:
            forms.append(f"{n:,}")
        forms += [f"x = {n}", f"{n}.0"]
        if task == "gsm8k" and n >= 0:
            forms.append(f"${n}")
    else:
        forms += [
            forms[0].replace("\\frac", "\\dfrac"),
            f"{'-' if v < 0 else ''}{abs(v.numerator)}/{v.denominator}",
            f"x = {forms[0]}",
        ]
        dec = _terminating(v)
        if dec:
            forms += [dec, dec]
    return rng.choice(forms)


_FRAC_SYMBOLIC = re.compile(r"^\\frac\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}\{(\d+)\}$")


def _symbolic_forms(gold: str, rng: random.Random) -> str:
    """An equivalent written form of a non-numeric LaTeX answer."""
    squeezed = re.sub(r"\s+(?![A-Za-z])|(?<![A-Za-z])\s+", "", gold)  # keeps the space in ``\pi r``
    forms = [gold, gold.replace("\\frac", "\\dfrac"), squeezed, gold.replace(",", ", ")]
    m = _FRAC_SYMBOLIC.match(gold.replace("\\dfrac", "\\frac"))
    if m and not any(op in m.group(1) for op in "+-"):
        forms.append(f"{m.group(1)}/{m.group(2)}")  # \frac{\sqrt{3}}{2} -> \sqrt{3}/2
    if gold.startswith("\\left(") and gold.endswith("\\right)"):
        forms.append("(" + gold[len("\\left(") : -len("\\right)")] + ")")
    parts = gold.split(",")
    if 2 <= len(parts) <= 4 and not any(ch in gold for ch in "()[]{}\\"):
        forms.append(", ".join(reversed([p.strip() for p in parts])))  # an unordered list of solutions
    return rng.choice(forms)


def _perturb(gold: str, k: int) -> str:
    """A non-equivalent answer: the last digit (not an exponent) shifted by ``k``, or ``+ k`` without digits."""
    for i in range(len(gold) - 1, -1, -1):
        if gold[i].isdigit() and not (i > 0 and gold[i - 1] in "^_"):
            return gold[:i] + str((int(gold[i]) + k) % 10) + gold[i + 1 :]
    return f"{gold}+{k}"


def _wrong(gold: str, task: str, k: int) -> str:
    c = canonicalize(gold, task)
    if c.value is not None:
        v = c.value
        return _fmt_number(v + k if v.denominator == 1 else v * (k + 1))
    return _perturb(gold, k)


def _final_line(answer: str, task: str, rng: random.Random) -> str:
    if task == "gsm8k":
        templates = [
            "#### {a}",
            "The answer is {a}.",
            "Final answer: {a}",
            "So the answer is $\\boxed{{{a}}}$.",
            "So in total it comes to {a}.",  # free-form: no marker, the last number
            "Final Answer: The final answer is {a}. I hope it is correct.",
        ]
        weights = [3, 2, 2, 1, 1, 1]
    else:
        templates = [
            "Therefore, the final answer is $\\boxed{{{a}}}$.",
            "The answer is: {a}",
            "So \\boxed{{{a}}}.",
            "Final Answer: The final answer is ${a}$. I hope it is correct.",  # free-form statements
            "Therefore the value we want is \\({a}\\).",
            "Putting it together,\n\\[ {a} \\]",
        ]
        weights = [4, 2, 1, 1, 1, 1]
    return rng.choices(templates, weights)[0].format(a=answer)


def _reasoning(row: dict, task: str) -> str:
    if task == "gsm8k":
        body = row["answer"].rsplit("####", 1)[0]
        return re.sub(r"<<[^>]*>>", "", body).strip()
    body = row["answer"].rsplit("The answer is: ", 1)[0]
    i = body.rfind("\\boxed{")
    if i >= 0:  # unbox the reference's own answer so only the final line states one
        depth, j = 0, i + len("\\boxed")
        for j in range(i + len("\\boxed"), len(body)):
            depth += {"{": 1, "}": -1}.get(body[j], 0)
            if depth == 0:
                break
        body = body[:i] + body[i + len("\\boxed{") : j] + body[j + 1 :]
    return body.strip()


def build(data: Path, prompts: int, n: int, seed: int) -> list[Prompt]:
    gsm, math500 = _load(data)
    rng = random.Random(seed)
    rows = [("gsm8k", r) for r in rng.sample(gsm, prompts // 2)]
    rows += [("math", r) for r in rng.sample(math500, min(len(math500), prompts - prompts // 2))]
    out = []
    for task, row in rows:
        sep = "####" if task == "gsm8k" else "The answer is: "
        gold = row["answer"].rsplit(sep, 1)[-1].strip()
        reasoning = _reasoning(row, task)
        p_correct = rng.choice([0.9, 0.7, 0.5, 0.3, 0.1])
        wrong = [_wrong(gold, task, 1), _wrong(gold, task, 2)]
        responses, truth, finished = [], [], []
        for _ in range(n):
            u = rng.random()
            finished.append(u >= 0.04)
            if u < 0.04:
                responses.append(reasoning[: max(1, len(reasoning) // 2)])  # cut off: no final answer
                truth.append(0)
                continue
            if u < p_correct:
                value, ok = gold, 1
            else:
                value, ok = (wrong[0] if rng.random() < 0.7 else wrong[1]), 0
            cv = canonicalize(value, task)
            written = _number_forms(cv.value, rng, task) if cv.value is not None else _symbolic_forms(value, rng)
            responses.append(f"{reasoning}\n{_final_line(written, task, rng)}")
            truth.append(ok)
        out.append(Prompt(task, gold, responses, truth, finished))
    return out


# --------------------------------------------------------------------------- the two paths


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of other processes (Linux ``/proc``); NaN where it cannot be read."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Timing:
    """One timed run: wall-clock seconds, and CPU seconds of the calling process plus its worker processes."""

    wall: float
    cpu: float


def run_ours(prompts: list[Prompt], workers: int, batched: bool) -> tuple[list[list[float]], Timing, dict]:
    config = ConsistencyConfig(task="math", verify_workers=workers, verify_timeout_s=10.0)
    canonical_cache_clear()  # every run starts cold: no canonical forms, parses or comparisons cached
    with AnswerClusterer(config) as clusterer:
        clusterer.warmup()
        pids = clusterer.worker_pids()
        cpu_start = time.process_time() + _cpu_seconds(pids)
        start = time.perf_counter()
        rewards: list[list[float]] = [[] for _ in prompts]
        for task in ("gsm8k", "math"):
            idx = [i for i, p in enumerate(prompts) if p.task == task]
            chunks = [idx] if batched else [[i] for i in idx]
            for chunk in chunks:
                groups, finished = [prompts[i].responses for i in chunk], [prompts[i].finished for i in chunk]
                stats = score_groups(groups, task, clusterer, finished)
                golds = label_clusters(stats, [prompts[i].gold for i in chunk], clusterer, task)
                for i, s, g in zip(chunk, stats, golds, strict=True):
                    rewards[i] = rewards_for_cluster(s, g)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + _cpu_seconds(pids) - cpu_start
        return rewards, Timing(elapsed, cpu), clusterer.stats()


def _byte_tokenizer():
    """A real Hugging Face fast tokenizer with one token per byte (no vocabulary download needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _verl_compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    from verl.utils.reward_score import math_verify

    return math_verify.compute_score(solution_str, ground_truth)


def run_verl(prompts: list[Prompt]) -> tuple[list[list[float]], Timing]:
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.utils.reward_score import math_verify

    tokenizer = _byte_tokenizer()
    items = []
    for p in prompts:
        for r in p.responses:
            ids = torch.tensor(tokenizer(r, add_special_tokens=False)["input_ids"], dtype=torch.long)
            items.append(
                DataProto.from_dict(
                    tensors={"responses": ids[None], "attention_mask": torch.ones_like(ids)[None]},
                    non_tensors={
                        "data_source": np.array(["math_verify"], dtype=object),
                        "reward_model": np.array([{"ground_truth": p.gold}], dtype=object),
                        "extra_info": np.array([{}], dtype=object),
                    },
                )
            )
    if math_verify._pool is not None:  # every repeat starts from cold workers, as ours do
        math_verify._pool.shutdown(wait=True)
        math_verify._pool = None
    with ThreadPoolExecutor(16) as threads:  # start all of verl's pool workers outside the timing
        list(threads.map(lambda _: math_verify.compute_score("\\boxed{1}", "1"), range(16)))

    pids = list(math_verify._pool._processes)

    async def score_all() -> tuple[list[float], Timing]:
        manager = NaiveRewardManager(
            config=OmegaConf.create({}), tokenizer=tokenizer, compute_score=_verl_compute_score
        )
        cpu_start = time.process_time() + _cpu_seconds(pids)
        start = time.perf_counter()
        results = await asyncio.gather(*(manager.run_single(item) for item in items))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + _cpu_seconds(pids) - cpu_start
        return [float(r["reward_score"]) for r in results], Timing(elapsed, cpu)

    flat, elapsed = asyncio.run(score_all())
    out, k = [], 0
    for p in prompts:
        out.append(flat[k : k + len(p.responses)])
        k += len(p.responses)
    return out, elapsed


def _accuracy(prompts: list[Prompt], rewards: list[list[float]], task: str | None = None) -> tuple[float, int]:
    """Share of responses whose binary reward equals the constructed truth, and the number of mismatches."""
    pairs = [
        (int(r > 0.5), t)
        for p, rs in zip(prompts, rewards, strict=True)
        if task is None or p.task == task
        for r, t in zip(rs, p.truth, strict=True)
    ]
    correct = sum(a == t for a, t in pairs)
    return correct / len(pairs), len(pairs) - correct


def _row(name: str, prompts: list[Prompt], rewards: list[list[float]], seconds: float | None) -> str:
    total = sum(len(p.responses) for p in prompts)
    acc, errors = _accuracy(prompts, rewards)
    gsm, _ = _accuracy(prompts, rewards, "gsm8k")
    math, _ = _accuracy(prompts, rewards, "math")
    timing = f"{seconds:.2f} | {total / seconds:.0f}" if seconds else "- | -"
    return f"| {name} | {total} | {timing} | {acc:.4f} | {gsm:.4f} | {math:.4f} | {errors} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--baseline-prompts", type=int, default=64, help="prompts scored by verl's path (subset)")
    parser.add_argument(
        "--workers",
        type=int,
        default=ConsistencyConfig().verify_workers,
        help="math-verify workers for our path (default: the training default, coact.consistency.verify_workers)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path; medians are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not (args.data / "gsm8k" / "test.jsonl").is_file() or not (args.data / "math500" / "test.jsonl").is_file():
        print(f"data not found under {args.data.resolve()} (expected gsm8k/test.jsonl and math500/test.jsonl)")
        return 2

    prompts = build(args.data, args.prompts, args.n, args.seed)
    total = sum(len(p.responses) for p in prompts)
    positives = sum(sum(p.truth) for p in prompts)
    print(f"built {len(prompts)} prompts x {args.n} = {total} responses ({positives} equivalent to gold)")

    rng = random.Random(args.seed + 1)
    by_task = {t: [i for i, p in enumerate(prompts) if p.task == t] for t in ("gsm8k", "math")}
    half = min(args.baseline_prompts // 2, len(by_task["gsm8k"]))
    rest = min(args.baseline_prompts - half, len(by_task["math"]))
    subset_idx = sorted(rng.sample(by_task["gsm8k"], half) + rng.sample(by_task["math"], rest))
    subset = [prompts[i] for i in subset_idx]
    sub_total = sum(len(p.responses) for p in subset)

    runs: dict[str, list[Timing]] = {"batched": [], "per_group": [], "verl": []}
    for _ in range(max(1, args.repeats)):
        ours, t_ours, counters = run_ours(prompts, args.workers, batched=True)
        ours_pg, t_ours_pg, _ = run_ours(prompts, args.workers, batched=False)
        verl_rewards, t_verl = run_verl(subset)
        for name, t in (("batched", t_ours), ("per_group", t_ours_pg), ("verl", t_verl)):
            runs[name].append(t)
    times = {k: [t.wall for t in v] for k, v in runs.items()}
    cpus = {k: statistics.median(t.cpu for t in v) for k, v in runs.items()}
    t_ours, t_ours_pg, t_verl = (statistics.median(times[k]) for k in ("batched", "per_group", "verl"))

    rate_ours, rate_pg, rate_verl = total / t_ours, total / t_ours_pg, sub_total / t_verl
    print()
    print("| path | responses | seconds | responses/s | accuracy | GSM8K acc | MATH acc | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(_row("verl NaiveRewardManager.run_single + math_verify (subset)", subset, verl_rewards, t_verl))
    print(_row("coact group stats + gold cluster, batched", prompts, ours, t_ours))
    print(_row("coact group stats + gold cluster, one group per call", prompts, ours_pg, t_ours_pg))
    print(_row("coact on verl's subset (from the batched run)", subset, [ours[i] for i in subset_idx], None))
    print()
    print(f"speed ratio vs verl: {rate_ours / rate_verl:.1f}x batched, {rate_pg / rate_verl:.1f}x one group per call")
    per_repeat = [
        f"{(total / b) / (sub_total / v):.1f}x/{(total / g) / (sub_total / v):.1f}x"
        for b, g, v in zip(times["batched"], times["per_group"], times["verl"], strict=True)
    ]
    repeats = len(times["verl"])
    print(f"median of {repeats} cold repeats; per repeat (batched/one group per call): {', '.join(per_repeat)}")
    print(f"verl timed on {len(subset)} of {len(prompts)} prompts ({sub_total} responses); ours on all {total}.")
    cpu_rate = {k: (sub_total if k == "verl" else total) / cpus[k] for k in cpus}
    print(
        f"CPU seconds (median; calling process + its math-verify workers): verl {cpus['verl']:.2f}, "
        f"batched {cpus['batched']:.2f}, one group per call {cpus['per_group']:.2f}; responses per CPU second vs "
        f"verl: {cpu_rate['batched'] / cpu_rate['verl']:.1f}x batched, "
        f"{cpu_rate['per_group'] / cpu_rate['verl']:.1f}x one group per call (less sensitive to a loaded machine)"
    )
    print(f"our math-verify work (batched run, {args.workers} worker(s)): {json.dumps(counters)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
