"""The ``hf`` rollout for verl: a replica that launches :class:`HFGenerationServer` and the adapter that
feeds it weights from the FSDP actor.

verl selects both halves by ``actor_rollout_ref.rollout.name=hf``:
- ``HFReplica`` (``RolloutReplicaRegistry``) starts one named server actor per replica, on the node of the
  replica's first trainer worker;
- ``HFServerAdapter`` (``_ROLLOUT_REGISTRY[("hf", "async")]``) lives in each FSDP worker. After every
  optimiser step verl's naive checkpoint path calls its ``update_weights``; the replica's first rank
  gathers the tensors to CPU and ships them through Ray's object store.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.utils.fs import copy_to_local
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from coact_verl.cpu.hf_server import HFGenerationServer

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
#: Diagnostic switch: "1" keeps the rollout on its initial weights (the control run of the weight-sync test).
FREEZE_WEIGHTS_ENV = "COACT_HF_ROLLOUT_FREEZE_WEIGHTS"


def server_actor_name(replica_rank: int, node_rank: int = 0) -> str:
    return f"{ROLLOUT_NAME}_server_{replica_rank}_{node_rank}"


async def _drain(weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterator) -> dict[str, torch.Tensor]:
    """Materialise a (possibly async) stream of named tensors on the CPU, full (unsharded) values."""
    state: dict[str, torch.Tensor] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        if hasattr(tensor, "full_tensor"):  # DTensor from FSDP2
            tensor = tensor.full_tensor()
        state[name] = tensor.detach().to("cpu", copy=True)

    if inspect.isasyncgen(weights) or hasattr(weights, "__anext__"):
        async for name, tensor in weights:  # type: ignore[union-attr]
            keep(name, tensor)
    else:
        for name, tensor in weights:  # type: ignore[union-attr]
            keep(name, tensor)
    return state


class HFServerAdapter(BaseRollout):
    """In-worker half of the ``hf`` rollout: pushes the actor's weights to the replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        world = self.config.tensor_model_parallel_size * self.config.data_parallel_size
        world *= self.config.pipeline_model_parallel_size
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.owns_server = rank % world == 0
        self._server: ray.actor.ActorHandle | None = None

    def _server_handle(self) -> ray.actor.ActorHandle:
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Any,
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        peft_config: Any = None,
        base_sync_done: bool = True,
        **_: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes full named tensors, not {wire_format!r}")
        if peft_config is not None:
            raise ValueError(
                "the hf rollout needs merged LoRA weights: set actor_rollout_ref.model.lora.merge=True "
                "(the configs in configs/ do) so that the actor sends full weights"
            )
        state = await _drain(weights)
        if not self.owns_server:
            return
        server = self._server_handle()
        if os.environ.get(FREEZE_WEIGHTS_ENV) != "1":
            await server.update_weights.remote(ray.put(state))
        if global_steps is not None:
            await server.set_global_steps.remote(global_steps)


class HFReplica(RolloutReplica):
    """Starts the generation server actor of one replica (hybrid mode: next to its FSDP workers)."""

    async def launch_servers(self) -> None:
        if self.nnodes != 1:
            raise ValueError("the hf rollout runs one server per replica; use tensor_model_parallel_size=1")
        node_id = ray.get_runtime_context().get_node_id()
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
        name = server_actor_name(self.replica_rank)
        server_cls = ray.remote(HFGenerationServer)
        server = server_cls.options(
            name=name,
            num_cpus=0,
            max_concurrency=self.max_concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=True),
        ).remote(
            model_path=copy_to_local(self.model_config.get("local_path") or self.model_config.path),
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.config.max_model_len,
            trust_remote_code=bool(self.model_config.get("trust_remote_code", False)),
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{name}.ray"

    def rollout_worker_use_gpu(self) -> bool:
        return False
