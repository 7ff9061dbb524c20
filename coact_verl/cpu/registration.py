"""What the plugin registers for the CPU backend: the CPU platform and the ``hf`` rollout."""

from __future__ import annotations

ROLLOUT_ADAPTER_FQN = "coact_verl.cpu.hf_rollout.HFServerAdapter"


def register_hf_rollout() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf`` resolve in verl's two rollout registries."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    def load_replica():
        from coact_verl.cpu.hf_rollout import HFReplica

        return HFReplica

    RolloutReplicaRegistry.register("hf", load_replica)
    rollout_base._ROLLOUT_REGISTRY[("hf", "async")] = ROLLOUT_ADAPTER_FQN


def register() -> bool:
    """Register the CPU platform and the ``hf`` rollout. Returns whether the CPU backend is active."""
    from coact_verl.cpu.platform import register_cpu_platform

    active = register_cpu_platform()
    register_hf_rollout()
    return active
