"""verl's own platform tests (``tests/plugin/test_platform_abstraction.py`` from the pinned verl's sdist,
unpacked into the virtual environment by ``make setup``) run against the installed verl with coact-verl
loaded, as they would in any verl job once the plugin is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VERL_PLATFORM_TESTS = Path(sys.prefix) / "verl-tests" / "tests" / "plugin" / "test_platform_abstraction.py"

#: On a host where torch sees no accelerator, verl picks coact-verl's ``cpu`` platform by design; verl's
#: test of auto-detection assumes that verl falls back to ``nvidia`` there. It runs on the faked GPU host.
CPU_HOST_ONLY_DESELECT = (
    "tests/plugin/test_platform_abstraction.py::TestPlatformDetection::test_empty_triggers_auto_detection"
)

#: A CUDA-capable torch in a container without ``nvidia-smi`` (e.g. NVIDIA_DRIVER_CAPABILITIES=compute).
FAKE_CUDA_SITECUSTOMIZE = """
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
"""


def _run_verl_tests(tmp_path: Path, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    assert VERL_PLATFORM_TESTS.is_file(), f"{VERL_PLATFORM_TESTS} is missing: run `make setup`"
    empty_bin = tmp_path / "bin"  # no nvidia-smi on PATH
    empty_bin.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(PATH=str(empty_bin), PYTHONPATH=os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p))
    ini = tmp_path / "pytest.ini"  # verl's tests under their own (empty) settings, not this project's
    ini.write_text("[pytest]\n")
    root = VERL_PLATFORM_TESTS.parents[2]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(root)]
        + [str(VERL_PLATFORM_TESTS), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=env,
    )


def test_verl_platform_tests_pass_on_a_gpu_host_without_nvidia_smi(tmp_path: Path):
    fake = tmp_path / "fake_cuda"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(FAKE_CUDA_SITECUSTOMIZE)
    result = _run_verl_tests(tmp_path, pythonpath=str(fake))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "14 passed" in result.stdout, result.stdout[-2000:]


def test_verl_platform_tests_pass_on_this_cpu_host(tmp_path: Path):
    result = _run_verl_tests(tmp_path, "--deselect", CPU_HOST_ONLY_DESELECT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "13 passed, 1 deselected" in result.stdout, result.stdout[-2000:]
