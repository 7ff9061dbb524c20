"""Torch-level adjustments that verl's FSDP2 path needs on a CPU-only host. verl itself is not edited.

- verl asks for the process-group backend ``"cpu:gloo,cpu:gloo"``, which torch rejects as a duplicate
  device; with every entry on the CPU it means plain ``gloo``.
- The reference model's FSDP2 ``CPUOffloadPolicy(pin_memory=True)`` pins host memory, which needs an
  accelerator; on the CPU nothing needs pinning.
- verl's FSDP engines are registered for ``cuda``/``npu``; they also serve ``cpu``.

They apply only in a process whose verl platform is the CPU one (:func:`apply_cpu_patches`, called when
verl creates that platform). The engine patches also wait for verl to import its FSDP engine module
(:func:`on_fsdp_engine_imported`), which this module never imports itself.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch
import torch.distributed

_active = False
_fsdp_engine_module: ModuleType | None = None


def collapse_cpu_backend(backend: str | None) -> str | None:
    """``"cpu:gloo,cpu:gloo"`` -> ``"gloo"``; any other backend string is returned unchanged."""
    if not backend or "," not in backend and ":" not in backend:
        return backend
    entries = [entry.split(":", 1) for entry in backend.split(",")]
    if all(len(entry) == 2 and entry[0] == "cpu" for entry in entries):
        names = {entry[1] for entry in entries}
        if len(names) == 1:
            return names.pop()
    return backend


def _patch_init_process_group() -> None:
    original = torch.distributed.init_process_group
    if getattr(original, "__coact_patched__", False):
        return

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        if "backend" in kwargs:
            kwargs["backend"] = collapse_cpu_backend(kwargs["backend"])
        elif args:
            args = (collapse_cpu_backend(args[0]), *args[1:])
        return original(*args, **kwargs)

    init_process_group.__coact_patched__ = True  # type: ignore[attr-defined]
    torch.distributed.init_process_group = init_process_group


def _patch_cpu_offload_policy(transformer_impl: ModuleType) -> None:
    policy_cls = transformer_impl.CPUOffloadPolicy
    if policy_cls is None or getattr(policy_cls, "__coact_patched__", False):
        return

    class UnpinnedCPUOffloadPolicy(policy_cls):  # type: ignore[misc, valid-type]
        __coact_patched__ = True

        def __init__(self, pin_memory: bool = False, **kwargs: Any) -> None:
            super().__init__(pin_memory=False, **kwargs)

    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def _register_fsdp_engines(transformer_impl: ModuleType) -> None:
    from verl.workers.engine.base import EngineRegistry

    for model_type, engine_cls in (
        ("language_model", transformer_impl.FSDPEngineWithLMHead),
        ("value_model", transformer_impl.FSDPEngineWithValueHead),
    ):
        for backend in ("fsdp", "fsdp2"):
            if "cpu" not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(engine_cls)


def _patch_fsdp_engines(transformer_impl: ModuleType) -> None:
    _register_fsdp_engines(transformer_impl)
    _patch_cpu_offload_policy(transformer_impl)


def on_fsdp_engine_imported(transformer_impl: ModuleType) -> None:
    """verl imported its FSDP engine module: patch it now if the CPU platform is active, else when it is."""
    global _fsdp_engine_module
    _fsdp_engine_module = transformer_impl
    if _active:
        _patch_fsdp_engines(transformer_impl)


def cpu_patches_active() -> bool:
    """Whether this process runs verl on the CPU platform (its patches are applied)."""
    return _active


def apply_cpu_patches() -> None:
    """Apply every CPU adjustment once per process (the engine ones as soon as verl has its FSDP engines)."""
    global _active
    if _active:
        return
    _active = True
    _patch_init_process_group()
    if _fsdp_engine_module is not None:
        _patch_fsdp_engines(_fsdp_engine_module)
