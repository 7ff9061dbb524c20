"""The one trainer's verl seams that run without Ray: hook rows replace a dataloader chunk's first rows, and
the checkpoint callback writes the hooks' state after the user's own callback."""

from __future__ import annotations

import numpy as np
import torch
import verl.utils.tensordict_utils as tu
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

from coact_verl.adapters.checkpoint import HookStateCallback
from coact_verl.adapters.trainer import replace_rows
from coact_verl.config import FeedbackConfig, GenerationConfig
from coact_verl.feedback.queue import FEEDBACK_AGENT, feedback_row
from coact_verl.pool import PromptPool
from coact_verl.step import FeedbackHook, PoolHook


def chunk(size: int):
    """A dataloader chunk as verl's ``_fetch_one_gen_batch`` returns it (no ``agent_name`` column)."""
    rows = {
        "raw_prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(size)],
        "data_source": [f"src{i}" for i in range(size)],
        "reward_model": [{"ground_truth": "", "style": "rule"} for _ in range(size)],
        "extra_info": [{"index": i} for i in range(size)],
        "ability": ["math"] * size,
        "uid": [f"uid{i}" for i in range(size)],
    }
    batch = {k: np.array(v + [None], dtype=object)[:-1] for k, v in rows.items()}
    return tu.get_tensordict({**batch, "dummy_tensor": torch.zeros(size, 1)})


def test_hook_rows_replace_the_first_rows_and_every_chunk_gets_an_agent():
    pool = PromptPool()
    pool.add_oracle_label("p", "12", 1, question="How many legs have 3 cats?", task="gsm8k", late=True)
    (pool_row,) = pool.take_for_training(1)
    pair = {"id": 1, "kind": "edit", "prompt_id": "p", "prompt": "Q?", "task": "gsm8k"}
    pair_row = feedback_row({**pair, "chosen": "#### 1", "rejected": "#### 2", "weight": 1.0})
    batch = replace_rows(chunk(4), [pool_row, pair_row], "coact_agent")
    assert tu.get(batch, "raw_prompt")[0] == pool_row["prompt"] and tu.get(batch, "raw_prompt")[2][0]["content"] == "q2"
    assert tu.get(batch, "data_source")[:3] == [pool_row["data_source"], pair_row["data_source"], "src2"]
    assert tu.get(batch, "extra_info")[0]["coact_label"] == "12"
    assert tu.get(batch, "extra_info")[1]["coact_feedback"]["chosen"] == "#### 1"
    assert tu.get(batch, "agent_name") == ["coact_agent", FEEDBACK_AGENT, "coact_agent", "coact_agent"]
    assert tu.get(batch, "uid") == [f"uid{i}" for i in range(4)]  # verl's uids stay
    untouched = replace_rows(chunk(2), [], "coact_agent")
    assert tu.get(untouched, "agent_name") == ["coact_agent"] * 2 and tu.get(untouched, "data_source") == [
        "src0",
        "src1",
    ]


class Recording(CheckpointCallback):
    def __init__(self):
        super().__init__(config={"trainer": {}})
        self.calls = []

    def on_save(self, trainer, global_step, checkpoint_dir, async_save=False, **kwargs):
        self.calls.append((global_step, checkpoint_dir, async_save))


class PairsOff:
    def feedback_pairs(self, since_id=0, limit=500, min_eta=None):
        return None


def test_on_save_writes_each_hooks_state_after_the_users_callback(tmp_path):
    pool_hook = PoolHook(GenerationConfig(), "gsm8k")
    pool_hook.pool.add("What is 2 + 2?", "gsm8k")
    inner = Recording()
    callback = HookStateCallback(inner, [pool_hook, FeedbackHook(FeedbackConfig(pairs=True), PairsOff())])
    folder = tmp_path / "global_step_3"
    callback.on_save(trainer=None, global_step=3, checkpoint_dir=str(folder), async_save=False)
    assert inner.calls == [(3, str(folder), False)] and callback.saved == (3, str(folder))
    assert PromptPool.load(folder / "coact_pool.json") == pool_hook.pool
    assert (folder / "coact_feedback.json").exists()
