"""Token-in/token-out generation server on plain transformers, for hosts without vLLM.

One Ray actor per replica holds an fp32 HF causal LM. Concurrent ``generate`` calls are gathered for
a few milliseconds and run as one left-padded batch per set of sampling parameters, which on a CPU is
several times faster than one request at a time. Weights arrive from the FSDP actor every step
(:meth:`HFGenerationServer.update_weights`), so rollouts are always sampled from the current policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig

logger = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.005
MAX_BATCH = 64


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    logprobs: bool
    stop_ids: frozenset[int]
    sampling_key: tuple[float, int, float, float]
    future: asyncio.Future = field(repr=False)


def sampling_key(params: dict[str, Any]) -> tuple[float, int, float, float]:
    """(temperature, top_k, top_p, repetition_penalty) with vLLM's conventions (top_k -1 = off)."""
    temperature = float(params.get("temperature", 1.0))
    top_k = int(params.get("top_k", -1) or -1)
    top_p = float(params.get("top_p", 1.0))
    repetition_penalty = float(params.get("repetition_penalty", 1.0))
    return temperature, top_k, top_p, repetition_penalty


class HFGenerationServer:
    """Ray actor body: batched sampling with an HF model, weight updates, step bookkeeping.

    Args:
        model_path: local HF model directory.
        prompt_length, response_length: verl's rollout lengths, in tokens (bound ``max_tokens``).
        max_model_len: optional hard context limit, in tokens.
        trust_remote_code: forwarded to transformers.
    """

    def __init__(
        self,
        model_path: str,
        prompt_length: int,
        response_length: int,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(int(os.environ.get("COACT_HF_ROLLOUT_THREADS", os.cpu_count() or 1)))
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(tokenizer, model_path)
        self.prompt_length = prompt_length
        self.response_length = response_length
        self.max_model_len = max_model_len or prompt_length + response_length
        self.global_steps: int | None = None
        self.weight_versions = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Any = None,
        video_data: Any = None,
        audio_data: Any = None,
        mm_processor_kwargs: Any = None,
        priority: int = 0,
        **_: Any,
    ):
        """Sample one response. Returns verl's ``TokenOutput`` (ids, optional log-probs, global step)."""
        from verl.workers.rollout.replica import TokenOutput

        if image_data or video_data or audio_data:
            raise ValueError("the hf rollout serves text-only models; multimodal inputs need the vllm rollout")
        prompt_ids = [int(t) for t in prompt_ids]
        params = dict(sampling_params)
        max_tokens = self._max_tokens(params, len(prompt_ids))
        stop_ids = frozenset() if params.get("ignore_eos") else frozenset(self.eos_ids)
        stop_ids |= frozenset(int(t) for t in params.get("stop_token_ids") or ())
        loop = asyncio.get_running_loop()
        request = _Request(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            logprobs=bool(params.get("logprobs", False)),
            stop_ids=stop_ids,
            sampling_key=sampling_key(params),
            future=loop.create_future(),
        )
        self._ensure_worker()
        await self._queue.put(request)
        token_ids, log_probs = await request.future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if request.logprobs else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _max_tokens(self, params: dict[str, Any], prompt_len: int) -> int:
        max_possible = self.max_model_len - prompt_len
        if max_possible < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room in a context of {self.max_model_len}")
        if "max_tokens" in params:
            max_tokens = int(params["max_tokens"])
        elif "max_new_tokens" in params:
            max_tokens = int(params["max_new_tokens"])
        else:
            max_tokens = min(self.response_length, self.prompt_length + self.response_length - prompt_len)
        return max(1, min(max_tokens, max_possible))

    def _ensure_worker(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(BATCH_WINDOW_S)
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.sampling_key, []).append(request)
            for key, requests in groups.items():
                try:
                    async with self._model_lock:
                        results = await asyncio.to_thread(self._sample_batch, key, requests)
                    for request, result in zip(requests, results, strict=True):
                        if not request.future.done():
                            request.future.set_result(result)
                except Exception as error:  # surface to every caller, keep serving
                    logger.exception("hf rollout batch failed")
                    for request in requests:
                        if not request.future.done():
                            request.future.set_exception(error)

    @torch.no_grad()
    def _sample_batch(
        self, key: tuple[float, int, float, float], requests: list[_Request]
    ) -> list[tuple[list[int], list[float]]]:
        """Left-pad, sample ``max(max_tokens)`` steps, cut each row at its stop token or own limit."""
        temperature, top_k, top_p, repetition_penalty = key
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention_mask[row, width - len(request.prompt_ids) :] = 1
        greedy = temperature <= 0
        all_stop_ids = sorted(set().union(*(r.stop_ids for r in requests)))
        generation_config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in requests),
            do_sample=not greedy,
            temperature=1.0 if greedy else temperature,
            top_k=top_k if top_k > 0 and not greedy else 0,
            top_p=top_p if not greedy else 1.0,
            repetition_penalty=repetition_penalty,
            eos_token_id=all_stop_ids or None,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        output = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
        )
        new_tokens = output.sequences[:, width:]
        logits = torch.stack(output.logits, dim=1).float()  # (B, T, V), raw model logits
        scale = 1.0 if greedy else temperature
        token_logps = torch.log_softmax(logits / scale, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, request in enumerate(requests):
            ids = new_tokens[row].tolist()[: request.max_tokens]
            end = len(ids)
            for position, token in enumerate(ids):
                if token in request.stop_ids:
                    end = position + 1
                    break
            results.append((ids[:end], token_logps[row, :end].tolist()))
        return results

    # ------------------------------------------------------------------ weights and control
    async def update_weights(self, named_tensors: dict[str, torch.Tensor]) -> int:
        """Load a full (or partial) state dict from the trainer. Returns the number of tensors loaded."""
        start = time.perf_counter()
        state = {name: tensor.to(torch.float32) for name, tensor in named_tensors.items()}
        async with self._model_lock:
            missing_known = set(state) - set(self.model.state_dict())
            if missing_known:
                raise KeyError(f"weights not in the rollout model: {sorted(missing_known)[:5]}")
            self.model.load_state_dict(state, strict=False)
            if getattr(self.model.config, "tie_word_embeddings", False):
                self.model.tie_weights()
        self.weight_versions += 1
        logger.info("hf rollout: %d tensors loaded in %.2fs", len(state), time.perf_counter() - start)
        return len(state)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def get_weight_versions(self) -> int:
        return self.weight_versions

    async def wake_up(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def sleep(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        while self._queue is not None and not self._queue.empty():
            await asyncio.sleep(0.01)

    async def resume_generation(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


def _eos_ids(tokenizer: Any, model_path: str) -> list[int]:
    """Stop ids from the tokenizer and the model's generation config (they disagree for some models)."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:
        eos = None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return sorted(ids)
