"""verl platform for hosts without an accelerator.

verl's platform layer knows NVIDIA, Huawei and AMD and falls back to NVIDIA when none is present.
:class:`CpuPlatform` registers as ``cpu`` and is auto-detected only when no other registered platform
finds its hardware (or when ``VERL_PLATFORM=cpu``). To let verl's resource manager place its
"GPU" workers, the CPU platform names Ray's ``GPU`` resource; the CPU configs start Ray with
``num_gpus`` logical GPUs that stand for CPU worker slots.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from coact_verl.cpu.device import CpuDeviceId, device_module

PLATFORM_NAME = "cpu"


@functools.lru_cache(maxsize=1)
def accelerator_present() -> bool:
    """Whether any other platform registered with verl finds its hardware on this host."""
    for name in PlatformRegistry.registered_names():
        if name == PLATFORM_NAME:
            continue
        platform_cls = PlatformRegistry.get(name)
        try:
            if platform_cls is not None and platform_cls().is_platform_available(use_smi_check=True):
                return True
        except Exception:  # a probe that fails means that hardware is absent
            continue
    return False


class CpuPlatform(PlatformBase):
    """Runs verl's trainer, engines and rollout on the host CPU with the gloo backend."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return not accelerator_present()

    def current_device(self) -> CpuDeviceId:  # type: ignore[override]
        return CpuDeviceId()

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return (None, None)

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_cpu_platform() -> bool:
    """Register the platform; apply the CPU patches when this host has no accelerator.

    Returns:
        True when the CPU backend is active in this process.
    """
    import os

    PlatformRegistry.register(platform=PLATFORM_NAME)(CpuPlatform)
    forced = os.environ.get("VERL_PLATFORM", "").strip().lower()
    active = forced == PLATFORM_NAME or (not forced and not accelerator_present())
    if active:
        from coact_verl.cpu.patches import apply_cpu_patches

        apply_cpu_patches()
    return active
