"""The routing benchmark runs as documented (one seed): every set, policy and mode, with the default ahead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_routing.py"


def test_bench_routing_reports_every_set_policy_and_mode():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--seeds", "1", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 4
    for by_policy in results.values():
        assert set(by_policy) == {"lowest_agreement", "coact", "adaptive", "random"}
        default = by_policy["lowest_agreement"]
        for mode in ("step", "online"):
            assert default[f"{mode}/min_spent_ratio"] >= 0.98, (mode, default)
            assert default[f"{mode}/caught_of_best"] > by_policy["random"][f"{mode}/caught_of_best"]
    scattered = results["weak model, scattered errors, n = 4"]
    assert scattered["lowest_agreement"]["step/caught_of_best"] > scattered["coact"]["step/caught_of_best"] + 0.05
