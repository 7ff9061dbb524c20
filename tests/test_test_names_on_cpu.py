"""verl's naming rule for tests that run without a GPU: every test module here ends in ``_on_cpu.py``.

All of coact-verl's tests run on CPU (the end-to-end ones run verl's real trainer on the CPU backend), so every
module carries the suffix; a module without it would read as one that needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_module_is_named_on_cpu():
    modules = sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py"))
    assert modules, "no test modules found"
    assert [m for m in modules if not m.endswith("_on_cpu.py")] == []
