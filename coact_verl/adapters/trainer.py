"""CoAct's V1 trainer (``trainer.v1.trainer_mode=coact``): verl's synchronous PPO trainer plus CoAct metrics.

After verl's own step metrics it reads the batch's ``reward_extra_info`` from TransferQueue and adds the
``coact/...`` metrics (:mod:`coact_verl.metrics`) and the oracle's budget. Gold answers, when
``coact.oracle.gold_path`` names them, are loaded here for measurement only.
"""

from __future__ import annotations

import logging
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from coact_verl.adapters.generation import CoActGenerationMixin
from coact_verl.adapters.late_labels import CoActLateLabelsMixin
from coact_verl.adapters.oracle_service import coact_config, ensure_oracle_service
from coact_verl.metrics import step_metrics

logger = logging.getLogger(__name__)


def load_gold(path: str | None) -> dict[str, str]:
    """``{prompt_id: answer}`` from a gold parquet/jsonl written by ``coact-verl prepare``; empty without a path."""
    if not path:
        return {}
    import pandas as pd

    frame = pd.read_json(path, lines=True) if str(path).endswith(".jsonl") else pd.read_parquet(path)
    return dict(zip(frame["prompt_id"].astype(str), frame["answer"].astype(str), strict=True))


class CoActMetricsMixin:
    """Adds ``coact/...`` metrics to every training step of a V1 trainer."""

    def init(self) -> None:
        # Before verl's init: its last hook (on_init_end) may already use these.
        self.oracle_url = ensure_oracle_service(self.config)  # type: ignore[attr-defined]
        self.coact = coact_config(self.config)  # type: ignore[attr-defined]
        self._gold = load_gold(self.coact.oracle.gold_path)
        self._clusterer = None
        self._oracle_client = None
        super().init()  # type: ignore[misc]

    def _metric_clusterer(self):
        if self._clusterer is None:
            from coact_verl.consistency import AnswerClusterer

            self._clusterer = AnswerClusterer(self.coact.consistency)
        return self._clusterer

    def _same(self, pairs):
        return self._metric_clusterer().same_many(pairs)

    def _after_batch(self, infos: list[dict], extra_infos: list[dict], metrics: dict) -> None:
        """Hook for mixins that learn from each training batch (e.g. the prompt pool)."""

    def _compute_metrics(self, batch: Any, metrics: dict, timing_raw: dict, global_steps: int, epoch: int):
        result = super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)  # type: ignore[misc]
        keep = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in keep]
        if keys:
            fields = ["extra_fields", "extra_info"]
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
            extra = data.pop("extra_fields").tolist()
            extra_infos = [e if isinstance(e, dict) else {} for e in data.pop("extra_info").tolist()]
            infos = [(e or {}).get("reward_extra_info", {}) if isinstance(e, dict) else {} for e in extra]
            uids = [key.split("_", 1)[0] for key in keys]
            metrics.update(step_metrics(infos, uids, gold=self._gold, same=self._same))
            self._after_batch(infos, extra_infos, metrics)
        metrics.update(self._budget_metrics())
        return result

    def _sync_oracle(self):
        """One synchronous client of the oracle service for the trainer's own calls (budget, label log)."""
        if self._oracle_client is None:
            from coact_verl.oracle.client import SyncOracleClient

            cfg = self.coact.oracle
            self._oracle_client = SyncOracleClient(
                self.oracle_url, cfg.token, request_timeout_s=cfg.request_timeout_s, max_wait_s=cfg.max_wait_s
            )
        return self._oracle_client

    def _budget_metrics(self) -> dict[str, float]:
        if not self.oracle_url:
            return {}
        budget = self._sync_oracle().budget()
        if not budget:
            return {"coact/oracle/unreachable": 1.0}
        return {f"coact/oracle/budget_{k}": float(v) for k, v in budget.items() if isinstance(v, int | float)}


@register_trainer("coact")
class CoActTrainer(CoActLateLabelsMixin, CoActGenerationMixin, CoActMetricsMixin, PPOTrainerSync):
    """Synchronous CoAct trainer (GRPO): rewards come from the rollout workers' group step; late oracle
    labels return to training through the prompt pool, and with ``coact.generation.every_k_steps > 0`` the
    pool also grows with generated questions."""
