"""CoAct on verl's classic trainer (``trainer.use_v1=false``: ``RayPPOTrainer``).

The classic trainer samples a batch through an ``AgentLoopManager`` and scores each response in a reward worker;
CoAct's group step runs there, in the drop-in ``coact`` reward manager. This manager opens the reward manager's
gate before the first step (oracle set-up and handshake: a misconfigured oracle stops the run at start), and
writes into each row what the classic trainer keeps in ``meta_info``: ``session_id`` (position among the copies of
its prompt), ``global_steps`` (paces the router) and, on validation batches, ``extra_info.coact_validate``.
Select with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=`` and the FQN of
:class:`CoActClassicAgentLoopManager` (``configs/coact_grpo_classic*.yaml`` do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager

from coact_verl.adapters.reward_manager import open_gate
from coact_verl.records import VALIDATE_KEY


def session_ids(uids: Sequence[Any]) -> np.ndarray:
    """Position of each row among the rows before it with the same uid, shape ``(len(uids),)``."""
    seen: dict[Any, int] = {}
    positions = []
    for uid in uids:
        positions.append(seen.get(uid, 0))
        seen[uid] = positions[-1] + 1
    return np.array(positions, dtype=np.int64)


def rows_for_the_reward_manager(prompts: DataProto) -> DataProto:
    """A copy of ``prompts`` with ``session_id``, ``global_steps`` and, when validating, marked ``extra_info``."""
    rows, n = dict(prompts.non_tensor_batch), len(prompts)
    rows["session_id"] = session_ids(list(rows["uid"]))
    rows["global_steps"] = np.full(n, int(prompts.meta_info.get("global_steps", 0)), dtype=np.int64)
    if prompts.meta_info.get("validate"):
        rows["extra_info"] = np.empty(n, dtype=object)
        rows["extra_info"][:] = [
            {**(e or {}), VALIDATE_KEY: True} for e in prompts.non_tensor_batch.get("extra_info", [None] * n)
        ]
    return DataProto(batch=prompts.batch, non_tensor_batch=rows, meta_info=dict(prompts.meta_info))


class CoActClassicAgentLoopManager(AgentLoopManager):
    """verl's classic ``AgentLoopManager`` for the ``coact`` reward manager (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = open_gate(self.config)

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        return super().generate_sequences(rows_for_the_reward_manager(prompts))
