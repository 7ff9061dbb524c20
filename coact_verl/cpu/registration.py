"""What the plugin registers for the CPU backend: the CPU platform, its engines and the ``hf`` rollout.

Only the platform class is registered as it is (verl's platform registry takes classes; it imports
nothing verl has not). The ``hf`` rollout is registered, through a loader and an import path, when
verl imports its rollout registries; the CPU engine patches wait for verl's FSDP engine module.
"""

from __future__ import annotations

from types import ModuleType

from coact_verl.plugin import lazy_import, when_imported

ROLLOUT_NAME = "hf"
ROLLOUT_ADAPTER_FQN = "coact_verl.cpu.hf_rollout.HFServerAdapter"
FSDP_ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"


def _register_hf_replica(replica: ModuleType) -> None:
    load = lazy_import("coact_verl.cpu.hf_rollout", f"rollout {ROLLOUT_NAME!r}", "HFReplica")
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, load)


def _register_hf_adapter(rollout_base: ModuleType) -> None:
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ROLLOUT_ADAPTER_FQN


def register_hf_rollout() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf`` resolve in verl's two rollout registries."""
    lazy_import("coact_verl.cpu.hf_rollout", f"rollout {ROLLOUT_NAME!r}")  # checked at load, imported on use
    when_imported("verl.workers.rollout.replica", _register_hf_replica)
    when_imported("verl.workers.rollout.base", _register_hf_adapter)


def register() -> None:
    """Register the CPU platform and the ``hf`` rollout; the CPU patches apply once the platform is chosen."""
    from coact_verl.cpu.patches import on_fsdp_engine_imported
    from coact_verl.cpu.platform import register_cpu_platform

    register_cpu_platform()
    when_imported(FSDP_ENGINE_MODULE, on_fsdp_engine_imported)
    register_hf_rollout()
