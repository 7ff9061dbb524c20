"""The hard-timeout pool: stuck tasks are killed, crashed workers replaced, nothing else is lost."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

from coact_verl.consistency import HardTimeoutPool


def test_a_stuck_task_is_killed_and_only_it_fails():
    with HardTimeoutPool(workers=2, timeout_s=1.0) as pool:
        pool.start()
        start = time.perf_counter()
        out = pool.map(time.sleep, [0.0, 60.0, 0.01, 0.0, 0.02], chunk_size=5)  # one chunk: the rest is requeued
        elapsed = time.perf_counter() - start
        assert [o.status for o in out] == ["ok", "timeout", "ok", "ok", "ok"]
        assert elapsed < 8.0  # 1 s limit + a worker restart, never the 60 s sleep
        assert pool.stats.timeouts == 1 and pool.stats.restarts == 1
        assert [o.value for o in pool.map(abs, [-1, -2, -3])] == [1, 2, 3]  # the pool keeps working


def test_a_crashing_worker_is_replaced():
    with HardTimeoutPool(workers=1, timeout_s=5.0) as pool:
        out = pool.map(os._exit, [3])
        assert out[0].status == "crash"
        assert pool.stats.crashes == 1
        assert pool.map(abs, [-5])[0].value == 5
        assert pool.worker_pids() == pool.map(_pid, [0])[0].value  # the replacement, not the dead worker


def _pid(_: object) -> list[int]:
    return [os.getpid()]


def test_exceptions_are_results_not_failures_of_the_batch():
    with HardTimeoutPool(workers=1, timeout_s=5.0) as pool:
        out = pool.map(math.sqrt, [4.0, -1.0, 9.0])
        assert [o.status for o in out] == ["ok", "error", "ok"]
        assert out[1].value.startswith("ValueError")
        assert out[0].value == 2.0 and out[2].value == 3.0


def test_memory_limit_turns_a_runaway_allocation_into_an_error():
    with HardTimeoutPool(workers=1, timeout_s=10.0, memory_mb=512) as pool:
        out = pool.map(bytearray, [2 * 1024**3, 10])
        assert out[0].status == "error" and "MemoryError" in out[0].value
        assert out[1].ok


def test_closed_pool_refuses_work_and_close_is_idempotent():
    pool = HardTimeoutPool(workers=1, timeout_s=1.0)
    assert pool.map(abs, []) == []
    assert not pool.started and pool.worker_pids() == []  # lazy: nothing started without work
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.map(abs, [1])


def test_forkserver_and_use_from_a_thread():
    results = {}

    def run():
        with HardTimeoutPool(workers=1, timeout_s=5.0, start_method="forkserver") as pool:
            results["out"] = pool.map(abs, [-7])

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert results["out"][0].value == 7


def test_bad_arguments():
    with pytest.raises(ValueError):
        HardTimeoutPool(workers=0)
    with pytest.raises(ValueError):
        HardTimeoutPool(timeout_s=0)
    with pytest.raises(ValueError):
        HardTimeoutPool(start_method="fork")
