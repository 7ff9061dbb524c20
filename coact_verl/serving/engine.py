"""A transformers chat model behind a lock: one generation at a time, bounded in tokens and wall-clock time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class GenerationTimeout(RuntimeError):
    """The request's time limit passed (waiting for the model or generating)."""


class GenerationCancelled(RuntimeError):
    """The caller gave up (its client disconnected)."""


class PromptTooLong(ValueError):
    """Prompt plus ``max_tokens`` exceed the model's context."""


@dataclass(frozen=True)
class Generation:
    """One completion: ``finish_reason`` is ``stop`` (eos, a stop string, or a closed JSON object) or ``length``.

    ``completion_tokens`` counts every generated token, the terminating eos included; ``seconds`` is the
    generation time without the wait for the lock.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def json_object_end(text: str) -> int | None:
    """Index just past the ``}`` closing the first top-level JSON object in ``text``, or ``None`` if still open."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = depth > 0
        elif ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class _Watch(StoppingCriteria):
    """Stops on a deadline, a cancel event, a stop string or (JSON mode) a closed object; remembers which."""

    def __init__(
        self,
        decode: Callable[[torch.Tensor], str],
        prompt_len: int,
        deadline: float | None,
        cancel: threading.Event | None,
        stop: Sequence[str],
        json_object: bool,
    ) -> None:
        self.decode, self.prompt_len, self.deadline, self.cancel = decode, prompt_len, deadline, cancel
        self.stop, self.json_object = tuple(stop), json_object
        self.reason: str | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.cancel is not None and self.cancel.is_set():
            self.reason = "cancelled"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "timeout"
        elif self.stop or self.json_object:
            text = self.decode(input_ids[0, self.prompt_len :])
            if any(s in text for s in self.stop) or (self.json_object and json_object_end(text) is not None):
                self.reason = "text"
        done = self.reason is not None
        # dtype=torch.bool: a BoolTensor, which torch's stubs cannot tell from the dtype argument
        return cast(
            torch.BoolTensor, torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
        )


class _FirstTokenIn(LogitsProcessor):
    """Restricts the first generated token to ``allowed`` (token ids), leaving later steps free."""

    def __init__(self, allowed: torch.Tensor, prompt_len: int) -> None:
        self.allowed, self.prompt_len = allowed, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.prompt_len:
            return scores
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.allowed] = scores[:, self.allowed]
        return cast(torch.FloatTensor, masked)  # full_like keeps the float dtype of ``scores``


class ChatEngine:
    """A causal LM and its tokenizer (whose chat template formats the messages), safe to call from threads.

    Args:
        model: a transformers causal LM, in eval mode.
        tokenizer: its tokenizer, with a chat template and a correct ``eos_token``.
        name: the model name served.
        max_context: prompt plus completion bound, in tokens.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, max_context: int) -> None:
        self.model, self.tokenizer, self.name, self.max_context = model, tokenizer, name, max_context
        eos = model.generation_config.eos_token_id
        eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [] if eos is None else [eos])}
        self.eos_ids = sorted(i for i in eos_ids if i is not None)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self._lock = threading.Lock()
        self._json_starts: torch.Tensor | None = None

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Prompt token ids: the chat template applied, with the assistant turn opened."""
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if not isinstance(ids, list) else ids
        return [int(i) for i in ids]

    def _decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _json_start_ids(self) -> torch.Tensor:
        """Ids of the tokens that open a JSON object without closing it (``{`` after optional whitespace)."""
        if self._json_starts is None:
            texts = (self._decode([i]).lstrip() for i in range(len(self.tokenizer)))
            ok = [i for i, t in enumerate(texts) if t.startswith("{") and json_object_end(t) is None]
            self._json_starts = torch.tensor(ok, dtype=torch.long)
        return self._json_starts

    def generate(self, messages: Sequence[dict[str, str]], **options: Any) -> Generation:
        """Complete chat ``messages`` (the tokenizer's chat template, generation prompt added); ``options`` as
        for :meth:`complete`."""
        return self.complete(self.encode(messages), **options)

    def complete(
        self,
        ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        json_object: bool = False,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Continue prompt token ``ids`` by at most ``max_tokens``; ``temperature == 0`` decodes greedily.

        ``json_object`` makes the reply start with ``{`` and end where that object closes (best effort, not a
        grammar). ``deadline`` is a ``time.monotonic()`` instant bounding the wait and the generation.
        Raises :class:`PromptTooLong`, :class:`GenerationTimeout` or :class:`GenerationCancelled`.
        """
        if len(ids) + max_tokens > self.max_context:
            raise PromptTooLong(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceed the context of {self.max_context}"
            )
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise GenerationTimeout("timed out waiting for the model")
        try:
            return self._generate_locked(ids, max_tokens, temperature, top_p, seed, stop, json_object, deadline, cancel)
        finally:
            self._lock.release()

    def _generate_locked(
        self,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: Sequence[str],
        json_object: bool,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> Generation:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("client went away before generation started")
        start = time.monotonic()
        watch = _Watch(self._decode, len(ids), deadline, cancel, stop, json_object)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            if seed is not None:
                torch.manual_seed(seed)
        if json_object:
            kwargs["logits_processor"] = LogitsProcessorList([_FirstTokenIn(self._json_start_ids(), len(ids))])
        device = self.model.device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_tokens,
                min_new_tokens=0,
                stopping_criteria=StoppingCriteriaList([watch]),
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                **kwargs,
            )
        new = out[0, len(ids) :].tolist()
        if watch.reason == "cancelled":
            raise GenerationCancelled(f"client went away after {len(new)} tokens")
        if watch.reason == "timeout":
            raise GenerationTimeout(f"time limit reached after {len(new)} tokens")
        ended = bool(new) and new[-1] in self.eos_ids
        text = self._decode(new[:-1] if ended else new)
        finish = "stop" if ended or watch.reason == "text" else "length"
        if watch.reason == "text":
            text = trim_reply(text, stop, json_object)
        return Generation(text, finish, len(ids), len(new), time.monotonic() - start)


def trim_reply(text: str, stop: Sequence[str], json_object: bool) -> str:
    """``text`` up to the earliest stop string, or (JSON mode) up to the end of the first object."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if json_object and (end := json_object_end(text)) is not None:
        cuts.append(end)
    return text[: min(cuts)] if cuts else text


def load_engine(
    path: str | Path,
    gguf_file: str | None = None,
    *,
    name: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    eos_token: str | None = None,
    pad_token: str | None = None,
) -> ChatEngine:
    """Load a chat model from a Hugging Face folder, or from ``path/gguf_file`` (dequantized to ``dtype``).

    ``eos_token``/``pad_token`` override what the checkpoint says (GGUF metadata often names the wrong eos);
    ``name`` defaults to the folder or GGUF file name.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    # A GGUF tokenizer is always converted to a fast one; naming the class spares a second parse of the file.
    tokenizer_class = PreTrainedTokenizerFast if gguf_file else AutoTokenizer
    tokenizer = tokenizer_class.from_pretrained(str(path), **extra)
    model = (
        AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], **extra)
        # transformers types PreTrainedModel.to through functools.wraps, which drops the bound self
        .to(device)  # type: ignore[arg-type]
        .eval()
    )
    for role, token in (("eos", eos_token), ("pad", pad_token)):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or tokenizer.convert_ids_to_tokens(token_id) != token:
            raise ValueError(f"{role} token {token!r} is not in the vocabulary")
        setattr(tokenizer, f"{role}_token", token)
        setattr(model.generation_config, f"{role}_token_id", token_id)
        setattr(model.config, f"{role}_token_id", token_id)
    if tokenizer.chat_template is None:
        raise ValueError(f"{path} has no chat template")
    max_context = int(getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length)
    served = name or Path(gguf_file or str(path).rstrip("/")).name.removesuffix(".gguf")
    log.info("loaded %s (%s, %s, context %d)", served, device, dtype, max_context)
    return ChatEngine(model, tokenizer, served, max_context)
