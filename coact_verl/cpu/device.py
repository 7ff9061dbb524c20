"""A ``torch.cuda``-shaped module for the CPU, returned by the CPU platform's ``device_module``.

verl calls CUDA-style helpers (``memory_reserved``, ``empty_cache``, ``mem_get_info``...) on whatever
``get_torch_device()`` returns. ``torch.cpu`` lacks most of them, so this module forwards what
``torch.cpu`` has and answers the rest with CPU-true values (no reserved accelerator memory, host RAM
for ``mem_get_info``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import psutil
import torch


class CpuDeviceId(str):
    """The id of "device 0" on the CPU.

    Its value is ``"cpu"`` so that ``tensor.to(device_id)`` stays on the CPU (an integer 0 means
    "accelerator 0" to torch and fails without one), while ``f"{name}:{device_id}"`` formats as
    ``cpu:0`` and ``int(device_id)`` is 0, as verl expects of an accelerator index.
    """

    def __new__(cls) -> CpuDeviceId:
        return super().__new__(cls, "cpu")

    def __format__(self, format_spec: str) -> str:
        return format(0, format_spec)

    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (CpuDeviceId, ())


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _mem_get_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    """(free bytes, total bytes) of host memory."""
    memory = psutil.virtual_memory()
    return memory.available, memory.total


class _CpuDeviceModule(types.ModuleType):
    """Forwards unknown attributes to ``torch.cpu``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)


def build_device_module() -> types.ModuleType:
    module = _CpuDeviceModule("coact_verl.cpu.device_module", __doc__)
    for name in ("memory_reserved", "memory_allocated", "max_memory_allocated", "max_memory_reserved"):
        setattr(module, name, _zero)
    for name in ("empty_cache", "reset_peak_memory_stats", "ipc_collect", "set_device", "synchronize"):
        setattr(module, name, _noop)
    module.mem_get_info = _mem_get_info
    module.memory_stats = lambda *_a, **_k: {}
    module.get_device_name = lambda *_a, **_k: "CPU"
    module.is_available = lambda: True
    module.device_count = lambda: 1
    module.current_device = CpuDeviceId
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.get_rng_state = lambda *_a, **_k: torch.get_rng_state()
    module.set_rng_state = lambda state, *_a, **_k: torch.set_rng_state(state)
    module.Stream = getattr(torch.cpu, "Stream", None)
    return module


device_module = build_device_module()
sys.modules.setdefault(device_module.__name__, device_module)
