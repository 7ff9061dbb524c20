"""The step hooks' state in verl's checkpoints through verl's public ``CheckpointCallback.on_save``: the trainer
wraps whatever ``trainer.checkpoint_callback_class`` names (verl's no-op by default), which keeps running first."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

from coact_verl.step import StepHook, save_states

logger = logging.getLogger(__name__)


class HookStateCallback(CheckpointCallback):
    """After verl saved ``global_step_N``: each stateful hook's state into that folder (atomic JSON files).

    ``saved`` is ``(step, folder)`` of the latest save, for the one write that must come later (see
    :meth:`coact_verl.adapters.trainer.CoActTrainer.on_step_end`).
    """

    def __init__(self, inner: CheckpointCallback, hooks: Sequence[StepHook]) -> None:
        super().__init__(config=inner.config)
        self.inner, self.hooks = inner, hooks
        self.saved: tuple[int, str] | None = None

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs: Any):
        self.inner.on_save(trainer, global_step, checkpoint_dir, async_save=async_save, **kwargs)
        written = save_states(self.hooks, checkpoint_dir)
        logger.info("CoAct step-hook state saved at step %s: %s", global_step, written)
        self.saved = (int(global_step), checkpoint_dir)
