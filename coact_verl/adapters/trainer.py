"""CoAct's V1 trainer (``trainer.v1.trainer_mode=coact``): verl's synchronous PPO trainer running CoAct's step
hooks (:mod:`coact_verl.step`) as one visible list. Per step of verl 0.9.1's ``fit``:

1. ``_fetch_one_gen_batch`` (per dataloader chunk): verl's chunk, its first rows replaced by the hooks' rows;
2. ``step``: verl's rollout and update, then every hook's ``after_step`` on the batch's ``reward_extra_info``;
3. verl's checkpoint save, where :class:`~coact_verl.adapters.checkpoint.HookStateCallback` writes the hooks' state;
4. ``on_step_end``: verl's weight sync, then the pool's generation round when due, with the new weights.

Every private verl member CoAct overrides or calls is in :data:`VERL_PRIVATE_SURFACE` (checked by
``tests/adapters/test_verl_surface_on_cpu.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any

import transfer_queue as tq
import verl.utils.tensordict_utils as tu
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from coact_verl.adapters.checkpoint import HookStateCallback
from coact_verl.adapters.router_actor import job_router
from coact_verl.oracle.job import coact_config, ensure_oracle_service
from coact_verl.step import ChatSampler, MetricsHook, PoolHook, RouterHook, StepBatch, StepHook
from coact_verl.step.hooks import after_step, load_states, rows_for_batch
from coact_verl.step.metrics_hook import load_gold

logger = logging.getLogger(__name__)

#: ``(module, attribute path, leading parameters we pass)`` of every private verl method we override or call;
#: ``None``: an attribute we read, set in the named ``__init__``.
_TQ, _WORKER = "verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ.__ray_actor_class__"
VERL_PRIVATE_SURFACE = (
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._fetch_one_gen_batch", ("self",)),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer._update_actor", ("self", "batch", "metrics")),  # dpo.py
    ("verl.single_controller.base.worker", "Worker._query_dispatch_info", ("self", "mesh_name")),  # dpo.py
    ("verl.single_controller.base.worker_group", "WorkerGroup.__init__._dispatch_info", None),  # dpo.py
    # agent_loop.py: the group step inside the rollout workers
    (_TQ, f"{_WORKER}.__init__", ("self",)),
    (_TQ, f"{_WORKER}._run_prompt", ("self", "prompt", "sampling_params", "trajectory", "trace")),
    (_TQ, f"{_WORKER}._run_agent_loop", ("self", "sampling_params", "trajectory", "agent_name")),
    (_TQ, f"{_WORKER}._agent_loop_postprocess", ("self", "output", "validate")),
)
#: Row fields a hook's row replaces in a dataloader chunk (``raw_prompt`` is the row's ``prompt``).
REPLACED_FIELDS = ("raw_prompt", "prompt", "data_source", "reward_model", "extra_info", "ability")


def replace_rows(batch: Any, rows: list[dict[str, Any]], default_agent: str) -> Any:
    """``batch`` (a dataloader chunk as a TensorDict) with its first ``len(rows)`` rows replaced by ``rows``."""
    size = len(tu.get(batch, "raw_prompt"))
    columns = {name: tu.get(batch, name) for name in REPLACED_FIELDS if name in batch.keys()}
    # every chunk gets the column (a row may bring its own agent loop): chunks of one step are concatenated
    columns["agent_name"] = tu.get(batch, "agent_name") or [default_agent] * size
    for index, row in enumerate(rows):
        row = {**row, "raw_prompt": row["prompt"]}
        for name, values in columns.items():
            if name != "agent_name" or name in row:
                values[index] = row[name]
    for name, values in columns.items():
        tu.assign_non_tensor_stack(batch, name, values)
    return batch


@register_trainer("coact")
class CoActTrainer(PPOTrainerSync):
    """Synchronous CoAct trainer (GRPO): rewards come from the rollout workers' group step; late oracle labels
    and, with ``coact.generation.every_k_steps > 0``, generated questions return through the prompt pool."""

    def init(self) -> None:
        # Before verl's init: its last hook (on_init_end) already restores the hooks on resume.
        self.oracle_url = ensure_oracle_service(self.config)
        self.coact = coact_config(self.config)
        self.oracle = None
        if self.oracle_url:
            from coact_verl.oracle.client import SyncOracleClient

            cfg = self.coact.oracle
            self.oracle = SyncOracleClient(
                self.oracle_url,
                cfg.token,
                request_timeout_s=cfg.request_timeout_s,
                max_wait_s=cfg.max_wait_s,
                run_id=cfg.run_id,
            )
        self.router = job_router(self.coact)  # before verl's init starts the rollout workers that share it
        self.pool = PoolHook(self.coact.generation, self.coact.consistency.task, self.oracle)
        self.hooks = self.step_hooks()
        self.checkpoint_callback = HookStateCallback(self.checkpoint_callback, self.hooks)
        self._step_metrics: dict[str, Any] = {}
        super().init()

    def step_hooks(self) -> list[StepHook]:
        """The step-end work in the order it runs; rows for the next batch are taken in the same order."""
        gold = load_gold(self.coact.oracle.gold_path)
        same, sample = (lambda pairs: self.clusterer.same_many(pairs)), self.coact.oracle.gold_metric_groups
        metrics = MetricsHook(gold, same=same, oracle=self.oracle, gold_groups=sample)
        return [metrics, RouterHook(self.router), self.pool]

    @functools.cached_property
    def clusterer(self) -> Any:
        from coact_verl.consistency import AnswerClusterer

        return AnswerClusterer(self.coact.consistency)

    def on_init_end(self) -> None:
        super().on_init_end()
        if self.global_steps > 0:  # verl resumed from a checkpoint: the hooks resume from the same folder
            trainer = self.config.trainer
            folder = os.path.join(os.path.abspath(trainer.default_local_dir), f"global_step_{self.global_steps}")
            if trainer.resume_mode == "resume_path" and trainer.get("resume_from_path"):
                folder = os.path.abspath(trainer.resume_from_path)
            logger.info("CoAct step hooks restored from %s", load_states(self.hooks, folder))

    def _fetch_one_gen_batch(self) -> Any:
        batch = super()._fetch_one_gen_batch()
        rows = rows_for_batch(self.hooks, int(self.global_steps), len(tu.get(batch, "raw_prompt")))
        return replace_rows(batch, rows, self.config.actor_rollout_ref.rollout.agent.default_agent_loop)

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        if self.oracle is not None:  # the service charges this step's queries, from every worker, to this step
            self.oracle.set_step(int(self.global_steps))
        # the step's groups are known before its rollout: the router's step budget is exact
        self.router.begin_step(int(self.global_steps), int(self.config.data.train_batch_size))
        batch = super().step(metrics, timing_raw)
        metrics.update(after_step(self.hooks, self._finished_step(batch)))
        self._step_metrics = metrics  # the generation round in on_step_end adds its metrics to this step's
        return batch

    def _finished_step(self, batch: Any) -> StepBatch:
        """The batch's responses (padding left out) with their ``reward_extra_info`` and dataset ``extra_info``."""
        keys = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding", False)]
        if not keys:
            return StepBatch(int(self.global_steps), [], [], [])
        fields = ["extra_fields", "extra_info"]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
        infos = [
            (e if isinstance(e, dict) else {}).get("reward_extra_info") or {} for e in tu.get(data, "extra_fields")
        ]
        rows = [e if isinstance(e, dict) else {} for e in tu.get(data, "extra_info")]
        return StepBatch(int(self.global_steps), infos, rows, [key.split("_", 1)[0] for key in keys])

    def on_step_end(self) -> None:
        super().on_step_end()  # verl: the step's new weights reach the rollout servers
        step = int(self.global_steps)
        if not self.pool.round_due(step):
            return
        rollout = self.config.actor_rollout_ref.rollout
        # verl left-truncates a longer training prompt and the rollout server refuses one that fills its context
        max_prompt_tokens = int(rollout.prompt_length)
        if rollout.get("max_model_len"):
            max_prompt_tokens = min(max_prompt_tokens, int(rollout.max_model_len) - 1)
        round_metrics = self.pool.generation_round(
            step,
            ChatSampler(self.get_llm_client(), self.tokenizer),
            self.clusterer,
            n=int(rollout.n),
            answer_params={"temperature": float(rollout.temperature), "top_p": float(rollout.top_p), "top_k": -1},
            answer_tokens=int(rollout.response_length),
            max_prompt_tokens=max_prompt_tokens,
        )
        self._step_metrics.update(asyncio.run(round_metrics))
        self._step_metrics.update(self.pool.pool.metrics())  # the pool as of the end of the step, round included
        # verl saved this step's checkpoint before on_step_end, so on_save wrote the pool without this round.
        # Decision: one deferred write of the pool into that folder, so a resume from global_step_N has all
        # that step N admitted. A crash before this write leaves the pool as of the save: the resume then
        # lacks only this round's questions, and the checkpoint stays self-consistent.
        saved = self.checkpoint_callback.saved
        if saved is not None and saved[0] == step:
            self.pool.pool.save(os.path.join(saved[1], self.pool.state_file))
