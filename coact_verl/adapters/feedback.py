"""User feedback pairs (comparison votes, edits) in CoAct's DPO training (``coact.feedback.pairs=True``).

- :class:`FeedbackPairAgentLoop` (agent loop ``coact_feedback``): a feedback row is not sampled; session 0
  replays the pair's chosen response and session 1 its rejected one (further sessions replay the chosen
  one and take no part in the loss). The group step marks the two rows ``chosen``/``rejected`` with the
  pair's weight (:func:`~coact_verl.labeling.feedback_infos`).
- :class:`CoActFeedbackMixin` (trainer): reads new pairs from the oracle service after each step, queues
  them (:class:`~coact_verl.feedback.queue.FeedbackQueue`, saved with each checkpoint) and puts up to
  ``coact.feedback.max_pairs_per_step`` of them into each batch, after the prompt pool's rows.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from coact_verl.feedback.queue import FEEDBACK_AGENT, FeedbackQueue

logger = logging.getLogger(__name__)

#: The queue's file inside verl's ``global_step_N`` checkpoint folder.
QUEUE_FILE = "coact_feedback.json"
PAGE = 500
#: Pages read per step at most; the rest is read in the next steps.
MAX_PAGES = 10


@register(FEEDBACK_AGENT)
class FeedbackPairAgentLoop(AgentLoopBase):
    """Replays a stored response instead of sampling one (see the module docstring)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        if self.rollout_config.calculate_log_probs:
            raise ValueError(
                "feedback pairs have no rollout log-probs: set actor_rollout_ref.rollout.calculate_log_probs=False"
            )
        pair = kwargs["extra_info"]["coact_feedback"]
        text = pair["rejected"] if int(kwargs["session_id"]) == 1 else pair["chosen"]
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        response_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        response_ids = response_ids[: self.rollout_config.response_length]
        # verl's staleness tags: count a replayed response as made by the weights the servers hold this step
        version = int(kwargs.get("global_steps") or 1) - 1
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=[1] * len(response_ids),
            num_turns=2,
            metrics=AgentLoopMetrics(),
            extra_fields={
                "turn_scores": [],
                "tool_rewards": [],
                "global_steps": version,
                "min_global_steps": version,
                "max_global_steps": version,
            },
        )


class CoActFeedbackMixin:
    """Feedback pairs from the oracle service into DPO batches (mixed in before the prompt-pool mixin)."""

    _feedback: FeedbackQueue | None = None
    _served_step: tuple[int, int] = (-1, 0)  # (training step, pairs put into its batch so far)

    @property
    def feedback(self) -> FeedbackQueue:
        if self._feedback is None:
            self._feedback = FeedbackQueue()
        return self._feedback

    def _feedback_on(self) -> bool:
        return bool(self.coact.feedback.pairs and self.oracle_url)  # type: ignore[attr-defined]

    def _after_batch(self, infos: list[dict], extra_infos: list[dict], metrics: dict) -> None:
        if self._feedback_on():
            metrics.update(self._read_pairs())
            metrics.update(self.feedback.metrics())
            weights = [float(i.get("coact_pair_weight", 0.0)) for i in infos if i.get("coact_route") == "feedback"]
            metrics["feedback/batch_rows"] = float(len(weights))
        if self._pool_folder is not None:  # type: ignore[attr-defined]  # this step saved a checkpoint
            self.feedback.save(os.path.join(self._pool_folder, QUEUE_FILE))  # type: ignore[attr-defined]
        super()._after_batch(infos, extra_infos, metrics)  # type: ignore[misc]

    def _read_pairs(self) -> dict[str, float]:
        cfg = self.coact.feedback  # type: ignore[attr-defined]
        client = self._sync_oracle()  # type: ignore[attr-defined]
        added = 0
        for _ in range(MAX_PAGES):
            before = self.feedback.cursor
            page = client.feedback_pairs(since_id=before, limit=PAGE, min_eta=cfg.min_eta)
            if page is None:
                logger.warning("oracle feedback pairs unreachable; they are read in a later step")
                return {"feedback/unreachable": 1.0, "feedback/read": float(added)}
            added += self.feedback.extend(page["pairs"], page["next_since_id"])
            if self.feedback.cursor == before:  # filtered votes move the cursor too: stop when it stands still
                break
        return {"feedback/read": float(added)}

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()  # type: ignore[misc]
        path = os.path.join(self._step_folder(), QUEUE_FILE)  # type: ignore[attr-defined]
        if self.global_steps > 0 and os.path.exists(path):  # type: ignore[attr-defined]
            self._feedback = FeedbackQueue.load(path)

    def _injected_rows(self, size: int) -> list[dict]:
        # verl may fetch a step's prompts in several dataloader chunks: the cap counts per training step
        rows = super()._injected_rows(size)  # type: ignore[misc]
        if self._feedback_on():
            step = int(self.global_steps)  # type: ignore[attr-defined]
            if self._served_step[0] != step:
                self._served_step = (step, 0)
            cap = int(self.coact.feedback.max_pairs_per_step)  # type: ignore[attr-defined]
            taken = self.feedback.take(max(0, min(size - len(rows), cap - self._served_step[1])))
            self._served_step = (step, self._served_step[1] + len(taken))
            rows += taken
        return rows
