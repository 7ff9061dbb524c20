"""verl platform for hosts without an accelerator.

verl's platform layer knows NVIDIA, Huawei and AMD and falls back to NVIDIA when none is present.
:class:`CpuPlatform` registers as ``cpu``; verl picks it only when it is certain there is no accelerator:

- ``VERL_PLATFORM=cpu``; or
- auto-detection (``VERL_PLATFORM`` unset) and :func:`accelerator_present` is false: torch sees no
  CUDA/ROCm/NPU/XPU device, the host has no accelerator device nodes for torch's CUDA/ROCm/NPU build
  (a Ray actor without a GPU on a GPU host still sees them), and no platform registered after this one
  finds its hardware. A missing ``nvidia-smi`` proves nothing and is never consulted.

Detection runs when verl first asks for its platform (``get_platform()``), never at import, and starts no
subprocess. The CPU patches (:mod:`coact_verl.cpu.patches`) apply when verl creates this platform as the
one it runs on. To let verl's resource manager place its "GPU" workers, the CPU platform names Ray's
``GPU`` resource; the CPU configs start Ray with ``num_gpus`` logical GPUs that stand for CPU worker slots.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from coact_verl.cpu.device import CpuDeviceId, device_module

PLATFORM_NAME = "cpu"

#: Device nodes of NVIDIA, AMD (ROCm) and Ascend accelerators; present on such a host even in a process
#: that sees no device (Ray hides them from actors without a GPU) and whether or not ``nvidia-smi`` is.
DEVICE_NODE_PATTERNS = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/davinci[0-9]*")


def _torch_sees_device() -> bool:
    if torch.cuda.is_available():  # CUDA and ROCm builds
        return True
    for name in ("npu", "xpu"):  # torch_npu adds torch.npu; torch.xpu is Intel's
        device = getattr(torch, name, None)
        is_available = getattr(device, "is_available", None)
        if callable(is_available) and is_available():
            return True
    return False


def _accelerator_build() -> bool:
    """Whether torch is built for an accelerator whose devices :data:`DEVICE_NODE_PATTERNS` name."""
    return (
        torch.version.cuda is not None
        or torch.version.hip is not None
        or importlib.util.find_spec("torch_npu") is not None
    )


def _device_nodes_present() -> bool:
    return any(glob.glob(pattern) for pattern in DEVICE_NODE_PATTERNS)


def _later_platform_available() -> bool:
    """Whether a platform registered after this one (another hardware plugin) finds its hardware."""
    names = PlatformRegistry.registered_names()
    later = names[names.index(PLATFORM_NAME) + 1 :] if PLATFORM_NAME in names else ()
    for name in later:
        platform_cls = PlatformRegistry.get(name)
        if platform_cls is None or issubclass(platform_cls, CpuPlatform):  # a CPU variant is no hardware
            continue
        try:
            if platform_cls().is_platform_available(use_smi_check=True):
                return True
        except Exception:  # a probe that fails means that hardware is absent
            continue
    return False


@functools.lru_cache(maxsize=1)
def accelerator_present() -> bool:
    """Whether this host has an accelerator: torch sees a device, the host has accelerator device nodes for
    torch's build, or a platform registered after this one finds its hardware (its own probe, which may
    run a vendor tool; nothing here starts a subprocess). Computed once per process, on first use."""
    if _torch_sees_device():
        return True
    if _accelerator_build() and _device_nodes_present():
        return True
    return _later_platform_available()


def cpu_selected() -> bool:
    """Whether verl runs on the CPU platform in this process (``VERL_PLATFORM``, else auto-detection)."""
    forced = os.environ.get("VERL_PLATFORM", "").strip().lower()
    if forced:
        return forced == PLATFORM_NAME
    return not accelerator_present()


class CpuPlatform(PlatformBase):
    """Runs verl's trainer, engines and rollout on the host CPU with the gloo backend."""

    def __init__(self) -> None:
        super().__init__()
        if cpu_selected():  # verl creates the platform it runs on (and probes each candidate)
            from coact_verl.cpu.patches import apply_cpu_patches

            apply_cpu_patches()

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


def register_cpu_platform() -> None:
    """Register the platform with verl; it detects hardware only when verl asks for a platform."""
    PlatformRegistry.register(platform=PLATFORM_NAME)(CpuPlatform)
