"""Near-duplicate index at scale: pool adds per second and recall on template-generated questions.

Generated questions repeat their seeds' structure, so a pool fills with template siblings: the same wording
with other names, items and numbers. Siblings share most of their 5-grams (Jaccard 0.55-0.75 here), so they
collide in the MinHash bands without being near-duplicates, and an index that checks every colliding text
pays for every sibling on every add. The stream built here has that shape: ``--templates`` question templates
(2-3 fact sentences and a question, drawn from a bank), each instance filling in names, items and numbers,
and every ``--plant-every``-th text a planted near-duplicate of an earlier stored text (1-6 small edits:
a number changed, a word dropped, inserted or swapped, kept when its exact Jaccard to the source is at or
above the threshold). Instances that happen to land at or above the threshold of a stored one are
near-duplicates too and are rejected like any other.

Indexes compared on the same stream, in one run:

* ``before``: the previous index (every text sharing a bucket with the query is compared, its shingles
  recomputed from its text), up to ``--baseline-max`` adds because it slows down as the pool grows;
* ``unbounded``: the current index without a bucket bound (``bucket_size=None``): ``before``'s decisions
  (every colliding text is compared, save the 0.1% at the threshold that the signature filter may drop), with
  cached signatures and shingle sets, up to ``--unbounded-max``
  adds (``--unbounded-max 100000`` gives the recall reference at 100k; it takes several times longer);
* ``bounded``: the current index as the pool uses it (``bucket_size=32``).

For each, at 1k, 10k and 100k adds: seconds spent in ``add`` (wall and CPU: on a busy machine the wall time
includes waiting for a core), adds/s over the whole run so far, adds/s over the last segment (does it slow
down?), candidates compared per add over the last segment, and the recall of planted near-duplicates so far.
Every reported duplicate is re-checked exactly, outside the timing (a false reject would be counted).

Run: ``python benchmarks/bench_dedup.py [--adds 100000 --templates 100 --baseline-max 5000]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coact_verl.pool.dedup import (  # noqa: E402
    DedupIndex,
    Duplicate,
    jaccard,
    normalize_text,
    shingles,
    similarity,
)

NAMES = (
    "Ava Ben Carlos Dana Elif Farah Gita Hiro Ines Jamal Kofi Lena Mateo Nadia Omar Priya Quinn Rosa Sven Tara "
    "Umar Vera Wen Xavier Yusuf Zoe Amara Bilal Chloe Dmitri Esme Felix Greta Hana Ivan Jonas Keiko Liam Maya Noor"
).split()
ITEMS = (
    "apples pencils stickers marbles cookies books shells stamps cards beads candles muffins tickets balloons "
    "coins plants"
).split()
FACTS = (
    "{n1} has {a} {i1} in a large wooden box at home.",
    "Every morning {n1} walks {b} blocks to the bakery on the corner of the street.",
    "The school library lends out {a} books each week to students in the fourth grade.",
    "{n2} collects {i2} and already owns {c} of them from last summer.",
    "A farmer plants {a} rows of corn with {b} plants in each row.",
    "The price of one bag of {i1} at the market is ${b}.",
    "{n1} saves ${c} of allowance every week for a new bicycle.",
    "A bus carries {a} passengers and {b} more get on at the second stop.",
    "{n2} bakes {c} trays of cookies, and each tray holds {d} cookies.",
    "The swimming pool is filled with {a} gallons of water before the weekend.",
    "{n1} buys {d} packs of {i1}, and every pack contains {b} of them.",
    "A train travels {a} miles in the first hour and {c} miles in the second hour.",
    "{n2} gives {b} {i2} to each of {c} friends at the birthday party.",
    "The garden has {a} rose bushes and {d} tulip beds along the fence.",
    "{n1} spends {b} minutes on homework and {c} minutes practicing the piano each day.",
    "On Saturday, the bakery sold {a} loaves of bread and {b} muffins.",
)
QUESTIONS = (
    "How many {i1} does {n1} have left at the end of the week?",
    "How much money does {n1} spend in total?",
    "How many more {i2} does {n2} need to reach {d}?",
    "What is the total number of items altogether?",
    "How many minutes does {n1} spend in all over {d} days?",
    "How many passengers are on the bus now?",
)
FILLERS = ("exactly", "also", "then", "only", "still")
CHECKPOINTS = (1_000, 10_000, 100_000)


def make_templates(count: int, rng: random.Random) -> list[str]:
    """``count`` question templates: 2-3 fact sentences from the bank and a question."""
    return [" ".join([*rng.sample(FACTS, rng.randint(2, 3)), rng.choice(QUESTIONS)]) for _ in range(count)]


def fill(template: str, rng: random.Random) -> str:
    """One instance of a template: two names, two items and four numbers drawn at random."""
    n1, n2 = rng.sample(NAMES, 2)
    i1, i2 = rng.sample(ITEMS, 2)
    a, b, c, d = (rng.randint(2, 99) for _ in range(4))
    return template.format(n1=n1, n2=n2, i1=i1, i2=i2, a=a, b=b, c=c, d=d)


def edit(text: str, rng: random.Random) -> str:
    """One small edit: change a number, drop a word, insert a filler word or swap two adjacent words."""
    words = text.split()
    kind = rng.randrange(4)
    numbered = [i for i, w in enumerate(words) if any(ch.isdigit() for ch in w)]
    if kind == 0 and numbered:
        i = rng.choice(numbered)
        number = "".join(ch for ch in words[i] if ch.isdigit())
        words[i] = words[i].replace(number, str(rng.randint(2, 99)), 1)
    elif kind == 1 and len(words) > 2:
        del words[rng.randrange(len(words))]
    elif kind == 2:
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
    elif len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def template_stream(
    count: int, templates: int = 100, plant_every: int = 20, threshold: float = 0.8, seed: int = 0
) -> list[tuple[str, int | None]]:
    """``count`` texts as ``(text, source)``: ``source`` is the stream index a planted near-duplicate copies
    (its exact Jaccard to that text is at least ``threshold``), ``None`` for a template instance."""
    rng = random.Random(seed)
    bank = make_templates(templates, rng)
    out: list[tuple[str, int | None]] = []
    instances: list[int] = []
    for n in range(count):
        if instances and n % plant_every == plant_every - 1:
            source = rng.choice(instances)
            text = out[source][0]
            for _ in range(rng.randint(1, 6)):
                text = edit(text, rng)
            if similarity(text, out[source][0]) >= threshold:
                out.append((text, source))
                continue
        instances.append(n)
        out.append((fill(rng.choice(bank), rng), None))
    return out


class BeforeIndex(DedupIndex):
    """The previous index: unbounded buckets; every candidate's shingles recomputed from its text."""

    def __init__(self, threshold: float = 0.8) -> None:
        super().__init__(threshold, bucket_size=None)
        self._texts: list[str] = []

    def _find_near(self, query, sketch) -> Duplicate | None:  # type: ignore[override]
        best = None
        rows = self._candidates(sketch[0]).tolist()
        self.comparisons += len(rows)
        for row in rows:
            score = jaccard(query, shingles(self._texts[row], self.ngram))
            if score >= self.threshold and (best is None or score > best.similarity):
                best = Duplicate("near", self._keys[row], score)
        return best

    def _store(self, normalized, key, query, sketch) -> None:  # type: ignore[override]
        self._texts.append(normalized)
        super()._store(normalized, key, query, sketch)


def run(name: str, index: DedupIndex, stream: list[tuple[str, int | None]], limit: int) -> dict:
    """Add ``stream[:limit]`` to ``index``, printing a row at each checkpoint; returns the last row.

    Only ``index.add`` is timed (wall and CPU); checking the decisions is not.
    """
    stored: dict[int, str] = {}
    planted = caught = false_rejects = 0
    wall = cpu = 0.0
    last = (0, 0.0, 0)  # adds, wall seconds, comparisons at the previous checkpoint
    row: dict = {}
    for n, (text, source) in enumerate(stream[:limit]):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        duplicate = index.add(text, str(n))
        wall += time.perf_counter() - wall_start
        cpu += time.process_time() - cpu_start
        if duplicate is None:
            stored[n] = text
        elif similarity(text, stored[int(duplicate.key)]) < index.threshold and duplicate.kind == "near":
            false_rejects += 1
        if source is not None and source in stored:
            planted += 1
            caught += duplicate is not None
        done = n + 1
        if done in CHECKPOINTS or done == limit:
            row = {
                "index": name,
                "adds": done,
                "seconds": wall,
                "cpu_seconds": cpu,
                "adds_per_s": done / max(wall, 1e-9),
                "segment_adds_per_s": (done - last[0]) / max(wall - last[1], 1e-9),
                "candidates_per_add": (index.comparisons - last[2]) / (done - last[0]),
                "stored": len(index),
                "planted": planted,
                "recall": caught / planted if planted else float("nan"),
                "false_rejects": false_rejects,
            }
            print(
                f"{name:<10} {done:>7} {wall:>8.1f} {cpu:>8.1f} {row['adds_per_s']:>9.0f}"
                f" {row['segment_adds_per_s']:>9.0f} {row['candidates_per_add']:>9.1f} {len(index):>7}"
                f" {caught:>5}/{planted:<5} {row['recall']:>7.4f} {false_rejects:>6}",
                flush=True,
            )
            last = (done, wall, index.comparisons)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adds", type=int, default=100_000, help="texts added to the bounded index")
    parser.add_argument("--templates", type=int, default=100, help="question templates in the stream")
    parser.add_argument("--plant-every", type=int, default=20, help="one planted near-duplicate per this many")
    parser.add_argument("--baseline-max", type=int, default=5_000, help="adds for the previous index")
    parser.add_argument("--unbounded-max", type=int, default=20_000, help="adds for the unbounded index")
    parser.add_argument("--bucket-size", type=int, default=DedupIndex().bucket_size)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    begin = time.perf_counter()
    total = max(args.adds, args.baseline_max, args.unbounded_max)
    stream = template_stream(total, args.templates, args.plant_every, args.threshold, args.seed)
    rng = random.Random(args.seed + 1)
    sibling = []
    for template in make_templates(10, rng):
        group = [shingles(normalize_text(fill(template, rng))) for _ in range(20)]
        sibling += [jaccard(group[i], group[j]) for i in range(len(group)) for j in range(i + 1, len(group))]
    sibling.sort()
    print(
        f"stream: {total} texts from {args.templates} templates, a planted near-duplicate every "
        f"{args.plant_every} (built in {time.perf_counter() - begin:.1f} s); Jaccard of two instances of one "
        f"template: median {sibling[len(sibling) // 2]:.2f}, 95th percentile {sibling[int(len(sibling) * 0.95)]:.2f}"
    )
    print(
        f"{'index':<10} {'adds':>7} {'wall_s':>8} {'cpu_s':>8} {'adds/s':>9} {'seg/s':>9} {'cand/add':>9}"
        f" {'stored':>7} {'planted':>11} {'recall':>7} {'false':>6}"
    )
    results = []
    if args.baseline_max > 0:
        results.append(run("before", BeforeIndex(args.threshold), stream, args.baseline_max))
    if args.unbounded_max > 0:
        index = DedupIndex(args.threshold, bucket_size=None)
        results.append(run("unbounded", index, stream, args.unbounded_max))
    bounded = DedupIndex(args.threshold, bucket_size=args.bucket_size)
    results.append(run("bounded", bounded, stream, args.adds))
    last = results[-1]
    arrays = (bounded._flat, bounded._signatures, bounded._start, bounded._len, bounded._marks)
    print(
        f"bounded index arrays (shingle sets, signatures, offsets): {sum(a.nbytes for a in arrays) / 2**20:.0f} MiB"
        f" allocated, {bounded._used * 4 / 2**20:.0f} MiB of shingle sets in use; "
        f"{bounded.full_buckets_skipped} (text, band) pairs left out of full buckets"
    )
    verdict = "met" if last["adds"] >= 100_000 and last["seconds"] <= 60 else "NOT met"
    print(
        f"bounded (bucket_size={args.bucket_size}): {last['adds']} adds in {last['seconds']:.1f} s "
        f"({last['adds_per_s']:.0f} adds/s, {last['cpu_seconds']:.1f} s CPU), recall {last['recall']:.4f}; "
        f"target 100,000 adds <= 60 s -> {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
