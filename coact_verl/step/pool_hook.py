"""The prompt pool between steps: oracle-labelled prompts become seeds, late labels return to training,
generation rounds are scheduled, and queued pool prompts replace dataset rows of the next batches.

- Seeds: prompts the oracle labelled in the step, whose majority the oracle did not reject
  (``coact.generation.seed_rule``), enter the :class:`~coact_verl.pool.PromptPool` with their question text.
- Late labels: the oracle's label log (``GET /v1/labels``) is read from the pool's cursor, at most
  ``MAX_PAGES`` × ``PAGE`` labels a step; a label that missed its own step queues its prompt
  (:class:`~coact_verl.pool.LateLabelTracker`).
- Generation: every ``coact.generation.every_k_steps`` steps the current policy writes questions from
  3-shot seed prompts and answers each n times through a :class:`TextSampler`; questions with
  τ_gen ≤ agreement < 1 join the pool with their majority answer as self-label.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from coact_verl import metric_keys as keys
from coact_verl.config import GenerationConfig
from coact_verl.pool import LateLabelTracker, PromptPool, run_generation_round
from coact_verl.records import REASON_POOL_LABEL, SOURCE_ORACLE, ResponseInfo
from coact_verl.step.hooks import StepBatch
from coact_verl.tasks import prompt_text

if TYPE_CHECKING:
    from coact_verl.consistency import AnswerClusterer

#: Label pages read per step at most (``PAGE`` labels each); the rest is read in the next steps.
MAX_PAGES = 10
PAGE = 500
#: Sampling for writing questions (CoAct: temperature 0.5, top-p 0.9).
WRITE_SAMPLING = {"temperature": 0.5, "top_p": 0.9, "top_k": -1}
PROVENANCES = ("dataset", "oracle", "generated")


class LabelLogReader(Protocol):
    def labels(self, since_id: int = 0, limit: int = 500) -> dict[str, Any] | None:
        """``{"labels": [...]}`` after ``since_id`` in commit order, or ``None`` when unreachable."""
        ...


class TextSampler(Protocol):
    """The policy being trained, as text in and text out (verl's rollout servers in the trainer)."""

    async def complete(self, messages: list[dict[str, str]], params: Mapping[str, Any], max_tokens: int) -> str:
        """One sampled completion of a chat prompt."""
        ...

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Token count of a chat prompt as the rollout sees it (chat template applied)."""
        ...


class TokenOutput(Protocol):
    """What an LLM server client's ``generate`` returns: the generated token ids."""

    @property
    def token_ids(self) -> Sequence[int]: ...


class LLMServerClient(Protocol):
    """An LLM server client, as verl's rollout servers expose it (``get_llm_client()``)."""

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any]
    ) -> TokenOutput: ...


class ChatSampler:
    """:class:`TextSampler` over an LLM server client (``await client.generate(request_id, prompt_ids=,
    sampling_params=)`` with ``.token_ids``, as verl's rollout servers answer) and a chat tokenizer."""

    def __init__(self, client: LLMServerClient, tokenizer: Any) -> None:
        self.client, self.tokenizer = client, tokenizer

    def _ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def complete(self, messages: list[dict[str, str]], params: Mapping[str, Any], max_tokens: int) -> str:
        params = {**params, "max_tokens": max_tokens}
        output = await self.client.generate(str(uuid.uuid4()), prompt_ids=self._ids(messages), sampling_params=params)
        return str(self.tokenizer.decode(output.token_ids, skip_special_tokens=True))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._ids(messages))


class PoolHook:
    """Prompt pool, seeds, late labels and generation rounds (see the module docstring).

    Args:
        config: ``coact.generation``.
        task: the run's answer format (``coact.consistency.task``), for rows without their own.
        oracle: the label log's reader, or ``None`` without an oracle service (no late labels then).
    """

    state_file = "coact_pool.json"

    def __init__(self, config: GenerationConfig, task: str, oracle: LabelLogReader | None = None) -> None:
        self.config = config
        self.task = task
        self.oracle = oracle
        self.pool = PromptPool.from_config(config)
        self.late = LateLabelTracker()

    # ------------------------------------------------------------------ after a step
    def after_step(self, batch: StepBatch) -> dict[str, float]:
        infos = [ResponseInfo.from_extra_info(info) for info in batch.infos]
        metrics: dict[str, float] = {}
        for info in infos:
            if info.label_source == SOURCE_ORACLE and info.route_reason != REASON_POOL_LABEL:
                self.late.record_in_step(info.prompt_id, batch.step)
        if self.oracle is not None:
            metrics.update(self._read_late_labels(batch.step))
        self._add_seeds(batch.step, infos, batch.rows)
        provenance = [str(row.get("provenance", "dataset")) for row in batch.rows]
        for name in PROVENANCES:
            metrics[keys.BATCH_PROVENANCE.format(provenance=name)] = float(provenance.count(name))
        metrics.update(self.pool.metrics())
        return metrics

    def _add_seeds(self, step: int, infos: list[ResponseInfo], rows: Sequence[Mapping[str, Any]]) -> None:
        seen: set[str] = set()
        for info, row in zip(infos, rows, strict=True):
            if not info.prompt_id or info.prompt_id in seen or info.label_source != SOURCE_ORACLE or not info.label:
                continue
            seen.add(info.prompt_id)
            cluster = info.label_cluster
            self.pool.add_oracle_label(
                info.prompt_id,
                info.label,
                step,
                question=str(row.get("question", "")),
                task=str(row.get("task") or self.task),
                majority_correct=cluster >= 0 if self.config.seed_rule == "any_correct" else cluster == 0,
            )

    def _read_late_labels(self, step: int) -> dict[str, float]:
        assert self.oracle is not None
        totals = {"late": 0, "late_unusable": 0}
        for _ in range(MAX_PAGES):
            page = self.oracle.labels(since_id=self.pool.label_cursor, limit=PAGE)
            if page is None:
                return {keys.LATE_LABELS_UNREACHABLE: 1.0}
            for name, value in self.late.apply(self.pool, page["labels"], step).items():
                totals[name] += value
            if len(page["labels"]) < PAGE:
                break
        return {keys.LATE_LABELS.format(count=name): float(value) for name, value in totals.items()}

    # ------------------------------------------------------------------ generation rounds
    def round_due(self, step: int) -> bool:
        """Whether a generation round runs at the end of ``step``."""
        return self.config.every_k_steps > 0 and step % self.config.every_k_steps == 0

    async def generation_round(
        self,
        step: int,
        sampler: TextSampler,
        clusterer: AnswerClusterer,
        *,
        n: int,
        answer_params: Mapping[str, Any],
        answer_tokens: int,
        max_prompt_tokens: int | None,
    ) -> dict[str, float]:
        """One round (:func:`~coact_verl.pool.run_generation_round`): write, answer ``n`` times, admit.

        Returns its ``gen/...`` metrics.
        """

        def answer_prompt(question: str) -> list[dict[str, str]]:
            return [{"role": "user", "content": prompt_text(question, self.task)}]

        async def write_questions(prompts: list[list[dict[str, str]]]) -> list[str]:
            tokens = int(self.config.max_question_tokens)
            return list(await asyncio.gather(*[sampler.complete(p, WRITE_SAMPLING, tokens) for p in prompts]))

        async def answer_questions(questions: list[str]) -> list[list[str]]:
            requests = [
                sampler.complete(answer_prompt(q), answer_params, answer_tokens) for q in questions for _ in range(n)
            ]
            flat = await asyncio.gather(*requests)
            return [list(flat[i * n : (i + 1) * n]) for i in range(len(questions))]

        result = await run_generation_round(
            self.pool,
            self.config,
            self.task,
            step,
            write_questions,
            answer_questions,
            clusterer,
            prompt_tokens=lambda question: sampler.prompt_tokens(answer_prompt(question)),
            max_prompt_tokens=max_prompt_tokens,
        )
        return result.metrics()

    # ------------------------------------------------------------------ into the next batches
    def rows_for_batch(self, step: int, free: int) -> list[dict[str, Any]]:
        return self.pool.take_for_training(max(0, free))

    def state_dict(self) -> dict[str, Any]:
        """The pool's state (its label cursor included): a file :meth:`PromptPool.load` reads."""
        return self.pool.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pool.load_state_dict(dict(state))
