"""The CPU platform's pieces, without Ray: device id, backend string, device module, detection."""

from __future__ import annotations

import torch

from coact_verl.cpu.device import CpuDeviceId, device_module
from coact_verl.cpu.patches import collapse_cpu_backend
from coact_verl.cpu.platform import CpuPlatform, accelerator_present


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
