"""What installing coact-verl costs every verl process: ``import verl`` with the plugin against without it.

verl imports the plugin (``verl.plugins`` entry point) in every process of every job, CoAct or not. This
benchmark starts fresh interpreters in alternation, each timing ``import verl`` from inside the process and
reading its resident memory afterwards, with the plugin (the default) and with
``VERL_USE_EXTERNAL_PLUGINS=none`` (verl alone), and compares the medians:

* time ratio: median import time with the plugin / without (bound: at most 1.10);
* memory delta: median RSS with the plugin - without, in MB (bound: at most 30).

Run: ``python benchmarks/bench_import.py [--runs 7] [--json]``; the exit status is 1 when a bound is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MAX_TIME_RATIO = 1.10
MAX_MEMORY_DELTA_MB = 30.0

PROBE = r"""
import json, sys, time
start = time.perf_counter()
import verl
elapsed = time.perf_counter() - start
with open("/proc/self/status") as status:
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
print(json.dumps({"seconds": elapsed, "rss_mb": rss_kb / 1024, "modules": len(sys.modules),
                  "coact": sorted(m for m in sys.modules if m.startswith("coact_verl"))}))
"""

VARIANTS = {"plugin": {}, "verl alone": {"VERL_USE_EXTERNAL_PLUGINS": "none"}}


def measure_once(extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(extra_env)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"import verl failed ({extra_env}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(runs: int) -> dict:
    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    measure_once({})  # warm the file cache (bytecode, shared libraries) for both variants
    for _ in range(runs):
        for name, extra_env in VARIANTS.items():  # alternate so that load drift hits both alike
            samples[name].append(measure_once(extra_env))
    summary = {}
    for name, rows in samples.items():
        summary[name] = {
            "seconds": statistics.median(r["seconds"] for r in rows),
            "rss_mb": statistics.median(r["rss_mb"] for r in rows),
            "modules": statistics.median(r["modules"] for r in rows),
            "coact_modules": rows[-1]["coact"],
        }
    plugin, alone = summary["plugin"], summary["verl alone"]
    time_ratio = plugin["seconds"] / alone["seconds"]
    memory_delta = plugin["rss_mb"] - alone["rss_mb"]
    return {
        "runs": runs,
        "variants": summary,
        "time_ratio": time_ratio,
        "memory_delta_mb": memory_delta,
        "time_ok": time_ratio <= MAX_TIME_RATIO,
        "memory_ok": memory_delta <= MAX_MEMORY_DELTA_MB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per variant (medians are reported)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    report = run(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"import verl, median of {report['runs']} fresh processes each")
        print(f"{'variant':<12} {'seconds':>8} {'RSS MB':>8} {'modules':>8}")
        for name, row in report["variants"].items():
            print(f"{name:<12} {row['seconds']:>8.2f} {row['rss_mb']:>8.1f} {row['modules']:>8.0f}")
        print(f"coact-verl modules loaded by import verl: {', '.join(report['variants']['plugin']['coact_modules'])}")
        verdict = {True: "ok", False: "NOT met"}
        print(
            f"time ratio    {report['time_ratio']:.3f}x  (bound <= {MAX_TIME_RATIO:.2f}x): {verdict[report['time_ok']]}"
        )
        print(
            f"memory delta  {report['memory_delta_mb']:+.1f} MB (bound <= {MAX_MEMORY_DELTA_MB:.0f} MB): "
            f"{verdict[report['memory_ok']]}"
        )
    return 0 if report["time_ok"] and report["memory_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
