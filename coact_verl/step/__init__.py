"""What happens between two training steps, without verl: plain hook objects a trainer runs in a list.

Typical use (the verl trainer in :mod:`coact_verl.adapters.trainer` does exactly this)::

    hooks = [MetricsHook(...), RouterHook(...), PoolHook(...)]
    metrics = after_step(hooks, StepBatch(step, infos, rows, uids))   # after each training step
    new_rows = rows_for_batch(hooks, step, size)                       # rows that replace dataset rows
    states = {hook.state_file: hook.state_dict() for hook in hooks if hook.state_file}
"""

from coact_verl.step.feedback_hook import FeedbackHook
from coact_verl.step.hooks import StepBatch, StepHook, after_step, load_states, rows_for_batch, save_states
from coact_verl.step.metrics_hook import MetricsHook
from coact_verl.step.pool_hook import ChatSampler, PoolHook, TextSampler
from coact_verl.step.router_hook import RouterHook, RouterState

__all__ = [
    "ChatSampler",
    "FeedbackHook",
    "MetricsHook",
    "PoolHook",
    "RouterHook",
    "RouterState",
    "StepBatch",
    "StepHook",
    "TextSampler",
    "after_step",
    "load_states",
    "rows_for_batch",
    "save_states",
]
