"""The CPU platform's pieces, without Ray: device id, backend string, device module, detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coact_verl.cpu import platform as cpu_platform
from coact_verl.cpu.device import CpuDeviceId, device_module
from coact_verl.cpu.patches import collapse_cpu_backend
from coact_verl.cpu.platform import CpuPlatform, accelerator_present

#: What verl's own test of auto-detection (tests/plugin/test_platform_abstraction.py) accepts.
VERL_AUTO_DETECTED = ("nvidia", "huawei", "amd", "intel")

FAKE_CUDA_TORCH = """
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
"""

DETECT = """
import json, os, verl
import torch.distributed
from coact_verl.cpu.patches import cpu_patches_active
from verl.plugin.platform import platform_manager

def detect():
    platform_manager._current_platform = None
    name = platform_manager._detect_platform_name()
    return {"name": name, "device": platform_manager.get_platform().device_name,
            "cpu_patches": cpu_patches_active(),
            "gloo_wrapper": hasattr(torch.distributed.init_process_group, "__coact_patched__")}
"""

AUTO_THEN_FORCED = """
auto = detect()
os.environ["VERL_PLATFORM"] = "cpu"
forced = detect()
print(json.dumps({"auto": auto, "forced": forced}))
"""

OTHER_HARDWARE_LATER = """
from verl.plugin.platform import PlatformRegistry
from verl.plugin.platform.platform_cuda import PlatformCUDA

class OtherHardware(PlatformCUDA):
    @property
    def device_name(self):
        return "other"

    def is_available(self):
        return False

    def is_platform_available(self, use_smi_check=False):
        return use_smi_check  # its vendor tool finds the hardware

PlatformRegistry.register(platform="other")(OtherHardware)
print(json.dumps(detect()))
"""


def _run(code: str, tmp_path: Path, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter whose PATH has no ``nvidia-smi``; return its last JSON line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, "PATH": str(empty_bin), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_device_id_stays_on_cpu_but_formats_as_index_zero():
    device_id = CpuDeviceId()
    assert torch.zeros(2).to(device_id).device.type == "cpu"
    assert f"cpu:{device_id}" == "cpu:0"
    assert int(device_id) == 0 and [10, 20][device_id] == 10


def test_backend_string_collapses_only_when_every_entry_is_cpu():
    assert collapse_cpu_backend("cpu:gloo,cpu:gloo") == "gloo"
    assert collapse_cpu_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert collapse_cpu_backend("gloo") == "gloo"
    assert collapse_cpu_backend(None) is None


def test_device_module_answers_cuda_style_queries():
    free, total = device_module.mem_get_info()
    assert 0 < free <= total
    assert device_module.memory_reserved() == 0 and device_module.max_memory_allocated() == 0
    assert device_module.get_device_name() == "CPU" and device_module.device_count() == 1
    device_module.empty_cache()
    assert device_module.is_available()


def test_platform_selected_only_without_accelerator():
    platform = CpuPlatform()
    assert platform.device_name == "cpu" and platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.is_platform_available() is (not accelerator_present())
    assert not torch.cuda.is_available()  # this test suite runs on CPU hosts
    assert platform.is_platform_available()


@pytest.fixture
def fresh_detection(monkeypatch: pytest.MonkeyPatch):
    """Detection as in a fresh process: no cached answer, no ``VERL_PLATFORM``."""
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    accelerator_present.cache_clear()
    yield monkeypatch
    accelerator_present.cache_clear()


def test_cuda_build_seeing_no_gpu_is_on_a_cpu_host_only_without_gpu_device_nodes(fresh_detection, tmp_path: Path):
    fresh_detection.setattr(torch.version, "cuda", "12.8")
    fresh_detection.setattr(torch.cuda, "is_available", lambda: False)
    node = tmp_path / "nvidiactl"
    fresh_detection.setattr(cpu_platform, "DEVICE_NODE_PATTERNS", (str(node),))
    assert not accelerator_present() and CpuPlatform().is_platform_available(use_smi_check=True)
    # A Ray actor without a GPU on a GPU host: torch sees no device, but the host has one.
    node.touch()
    accelerator_present.cache_clear()
    assert accelerator_present() and not CpuPlatform().is_platform_available(use_smi_check=True)


def test_verl_picks_cuda_on_a_gpu_host_without_nvidia_smi(tmp_path: Path):
    """torch reports CUDA, ``nvidia-smi`` is missing (e.g. NVIDIA_DRIVER_CAPABILITIES=compute)."""
    found = _run(FAKE_CUDA_TORCH + DETECT + AUTO_THEN_FORCED, tmp_path)
    assert found["auto"]["name"] in VERL_AUTO_DETECTED  # the intent of verl's test_empty_triggers_auto_detection
    assert found["auto"] == {"name": "nvidia", "device": "cuda", "cpu_patches": False, "gloo_wrapper": False}
    # VERL_PLATFORM=cpu still runs verl on the CPU of a GPU host, with the CPU patches
    assert found["forced"] == {"name": "cpu", "device": "cpu", "cpu_patches": True, "gloo_wrapper": True}


def test_hardware_platform_registered_after_cpu_wins(tmp_path: Path):
    """Another hardware plugin, loaded after coact-verl, whose devices this process does not see."""
    assert _run(DETECT + OTHER_HARDWARE_LATER, tmp_path) == {
        "name": "other",
        "device": "other",
        "cpu_patches": False,
        "gloo_wrapper": False,
    }
