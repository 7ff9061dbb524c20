"""Capability-aware question generation inside verl's V1 training loop (``coact.generation.every_k_steps > 0``).

- Seeds: after each step, prompts the oracle labelled, whose majority the oracle did not reject, enter
  the :class:`~coact_verl.pool.PromptPool` (with their question text from the batch's ``extra_info``).
- Generation: every K steps, right after the new weights reach the rollout servers, the *current*
  policy writes questions from 3-shot seed prompts and answers each n times, through the rollout servers
  that are already running (verl's LLM server client; no second copy of the model). Questions with
  τ_gen ≤ agreement < 1 join the pool with their majority answer as self-label.
- Training: each dataloader chunk has its first rows replaced by queued pool prompts (generated ones,
  late oracle labels), so they are trained on in the following steps through the same group step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import numpy as np

from coact_verl.pool import TASK_INSTRUCTIONS, PromptPool, run_generation_round

logger = logging.getLogger(__name__)

#: Sampling for writing questions (CoAct: temperature 0.5, top-p 0.9).
WRITE_SAMPLING = {"temperature": 0.5, "top_p": 0.9, "top_k": -1}
#: Row fields a pool prompt replaces in a dataloader chunk.
REPLACED_FIELDS = ("raw_prompt", "prompt", "data_source", "reward_model", "extra_info", "ability")
#: The pool's file inside verl's ``global_step_N`` checkpoint folder.
POOL_FILE = "coact_pool.json"


class CoActGenerationMixin:
    """Adds the prompt pool and generation rounds to a CoAct V1 trainer (mixed in before it)."""

    _pool: PromptPool | None = None
    _pool_folder: str | None = None
    _generation_metrics: dict[str, float] = {}

    @property
    def pool(self) -> PromptPool:
        """The prompt pool (restored from the checkpoint on resume, else new)."""
        if self._pool is None:
            self._pool = PromptPool.from_config(self.coact.generation)  # type: ignore[attr-defined]
        return self._pool

    # ------------------------------------------------------------------ checkpoints
    def _step_folder(self) -> str:
        trainer = self.config.trainer  # type: ignore[attr-defined]
        if trainer.resume_mode == "resume_path" and trainer.get("resume_from_path"):
            return os.path.abspath(trainer.resume_from_path)
        return os.path.join(os.path.abspath(trainer.default_local_dir), f"global_step_{self.global_steps}")

    def _save_checkpoint(self) -> None:
        # verl saves before the step's generation round (on_step_end) and metrics (where oracle seeds
        # arrive); the pool is written into the same folder at the end of the step, matching its step.
        super()._save_checkpoint()  # type: ignore[misc]
        self._pool_folder = self._step_folder()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()  # type: ignore[misc]
        path = os.path.join(self._step_folder(), POOL_FILE)
        if self.global_steps > 0 and os.path.exists(path):  # type: ignore[attr-defined]
            self._pool = PromptPool.load(path)
            logger.info("CoAct prompt pool restored from %s (%s)", path, self._pool.counts())

    # ------------------------------------------------------------------ seeds from the oracle
    def _after_batch(self, infos: list[dict], extra_infos: list[dict], metrics: dict) -> None:
        super()._after_batch(infos, extra_infos, metrics)  # type: ignore[misc]
        seen: set[str] = set()
        for info, extra in zip(infos, extra_infos, strict=True):
            pid = str(info.get("coact_prompt_id", ""))
            if not pid or pid in seen or info.get("coact_label_source") != "oracle" or not info.get("coact_label"):
                continue
            seen.add(pid)
            self.pool.add_oracle_label(
                pid,
                info["coact_label"],
                int(self.global_steps),  # type: ignore[attr-defined]
                question=str(extra.get("question", "")),
                task=str(extra.get("task") or self.coact.consistency.task),  # type: ignore[attr-defined]
                majority_correct=self._seed_worthy(int(info.get("coact_label_cluster", -1))),
            )
        provenance = [str(e.get("provenance", "dataset")) for e in extra_infos]
        for name in ("dataset", "oracle", "generated"):
            metrics[f"coact/batch/provenance_{name}"] = float(provenance.count(name))
        metrics.update(self.pool.metrics())
        metrics.update(self._generation_metrics)
        self._generation_metrics = {}
        if self._pool_folder is not None:  # last thing of a step that saved a checkpoint
            self.pool.save(os.path.join(self._pool_folder, POOL_FILE))
            self._pool_folder = None

    def _seed_worthy(self, label_cluster: int) -> bool:
        """Whether an oracle label makes its prompt a few-shot seed (``coact.generation.seed_rule``)."""
        if self.coact.generation.seed_rule == "any_correct":  # type: ignore[attr-defined]
            return label_cluster >= 0
        return label_cluster == 0

    # ------------------------------------------------------------------ generation rounds
    def on_step_end(self) -> None:
        super().on_step_end()  # type: ignore[misc]
        every = self.coact.generation.every_k_steps  # type: ignore[attr-defined]
        if every > 0 and int(self.global_steps) % every == 0:  # type: ignore[attr-defined]
            result = asyncio.run(self._generation_round())
            self._generation_metrics = result.metrics()

    async def _generation_round(self):
        client = self.get_llm_client()  # type: ignore[attr-defined]
        tokenizer = self.tokenizer  # type: ignore[attr-defined]
        rollout = self.config.actor_rollout_ref.rollout  # type: ignore[attr-defined]
        task = self.coact.consistency.task  # type: ignore[attr-defined]
        answer_tokens = int(rollout.response_length)
        question_tokens = int(self.coact.generation.max_question_tokens)  # type: ignore[attr-defined]

        async def sample(messages: list[dict], params: dict, max_tokens: int) -> str:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            output = await client.generate(
                str(uuid.uuid4()), prompt_ids=prompt_ids, sampling_params={**params, "max_tokens": max_tokens}
            )
            return tokenizer.decode(output.token_ids, skip_special_tokens=True)

        async def write_questions(prompts: list[list[dict]]) -> list[str]:
            return list(await asyncio.gather(*[sample(p, WRITE_SAMPLING, question_tokens) for p in prompts]))

        async def answer_questions(questions: list[str]) -> list[list[str]]:
            params = {"temperature": float(rollout.temperature), "top_p": float(rollout.top_p), "top_k": -1}
            instruction = TASK_INSTRUCTIONS[task]
            requests = [
                sample([{"role": "user", "content": f"{q} {instruction}"}], params, answer_tokens)
                for q in questions
                for _ in range(int(rollout.n))
            ]
            flat = await asyncio.gather(*requests)
            n = int(rollout.n)
            return [list(flat[i * n : (i + 1) * n]) for i in range(len(questions))]

        def prompt_tokens(question: str) -> int:  # the prompt a question is answered and trained with
            messages = [{"role": "user", "content": f"{question} {TASK_INSTRUCTIONS[task]}"}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        # verl left-truncates a longer training prompt and the rollout server refuses one that fills its context.
        max_prompt_tokens = int(rollout.prompt_length)
        if getattr(rollout, "max_model_len", None):
            max_prompt_tokens = min(max_prompt_tokens, int(rollout.max_model_len) - 1)

        return await run_generation_round(
            self.pool,
            self.coact.generation,  # type: ignore[attr-defined]
            task,
            int(self.global_steps),  # type: ignore[attr-defined]
            write_questions,
            answer_questions,
            self._metric_clusterer(),  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )

    # ------------------------------------------------------------------ pool prompts into training
    def _fetch_one_gen_batch(self):
        import verl.utils.tensordict_utils as tu

        try:
            if self.train_dataloader_it is None:  # type: ignore[has-type]
                self.train_dataloader_it = iter(self.train_dataloader)  # type: ignore[attr-defined]
            batch_dict = next(self.train_dataloader_it)
        except StopIteration:
            self.train_dataloader_it = iter(self.train_dataloader)  # type: ignore[attr-defined]
            batch_dict = next(self.train_dataloader_it)
        size = len(batch_dict["raw_prompt"])
        if "agent_name" not in batch_dict:  # every chunk gets the column: chunks of one step are concatenated
            default = self.config.actor_rollout_ref.rollout.agent.default_agent_loop  # type: ignore[attr-defined]
            batch_dict["agent_name"] = np.array([default] * size, dtype=object)
        for row_index, row in enumerate(self._injected_rows(size)):
            row = {**row, "raw_prompt": row["prompt"]}
            for name in REPLACED_FIELDS:
                if name in batch_dict:
                    batch_dict[name][row_index] = row[name]
            if "agent_name" in row:  # a row with its own agent loop (e.g. a feedback pair)
                batch_dict["agent_name"][row_index] = row["agent_name"]
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in range(size)], dtype=object)
        return tu.get_tensordict(batch_dict)

    def _injected_rows(self, size: int) -> list[dict]:
        """Rows that replace the first rows of a dataloader chunk of ``size``: queued pool prompts."""
        return self.pool.take_for_training(size)
