"""Sample n responses per chat prompt: transformers ``generate`` (CPU or one GPU), or vLLM on a GPU.

Prompts are rendered with the tokenizer's chat template (``add_generation_prompt=True``) and tokenised
without extra special tokens, as verl's rollout does. Sampling ignores the model's own generation defaults
(top-k, repetition penalty...): only temperature and top-p apply, so both backends sample alike.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BACKENDS = ("auto", "hf", "vllm")


class BackendUnavailableError(RuntimeError):
    """The requested sampling backend cannot run here."""


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are sampled.

    Args:
        n: responses per prompt.
        max_new_tokens: length limit of one response, in tokens.
        temperature: softmax temperature; 0 is greedy decoding (then all n responses are equal).
        top_p: nucleus sampling mass in (0, 1].
        batch_size: sequences (prompt copies) per ``generate`` call of the transformers backend.
        seed: seed of the sampler.
    """

    n: int = 8
    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("n, max_new_tokens and batch_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


def vllm_usable() -> bool:
    """vLLM is importable and a CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    """``hf`` or ``vllm`` for a requested backend (``auto`` takes vLLM when usable)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "vllm" if vllm_usable() else "hf"
    if name == "vllm" and not vllm_usable():
        raise BackendUnavailableError("the vllm backend needs the vllm package and a CUDA device")
    return name


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token ids to one width: ``(input_ids, attention_mask)``, each shape ``(len(rows), width)``."""
    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + list(r) for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


def encode_prompts(tokenizer: Any, conversations: Sequence[Sequence[Mapping[str, str]]]) -> list[list[int]]:
    """Token ids of each chat prompt rendered with the tokenizer's chat template, shape ``(prompts, len_i)``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; evaluation prompts are chat messages")
    texts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False) for c in conversations]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def generate_samples(
    model_path: str,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    settings: SamplingSettings,
    backend: str = "auto",
    progress: bool = True,
) -> list[list[str]]:
    """Decoded responses, shape ``(prompts, n)``, for chat prompts ``conversations``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompt_ids = encode_prompts(tokenizer, conversations)
    if resolve_backend(backend) == "vllm":
        return _sample_vllm(model_path, prompt_ids, settings, progress)
    return _sample_hf(model_path, tokenizer, prompt_ids, settings, progress)


def _sample_hf(
    model_path: str, tokenizer: Any, prompt_ids: list[list[int]], settings: SamplingSettings, progress: bool
) -> list[list[str]]:
    import torch
    from tqdm.auto import tqdm  # type: ignore[import-untyped]  # types-tqdm is not installed
    from transformers import AutoModelForCausalLM, GenerationConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = (
        AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        # transformers types PreTrainedModel.to through functools.wraps, which drops the bound self
        .to(device)  # type: ignore[arg-type]
        .eval()
    )
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _first(eos)
    greedy = settings.temperature == 0
    # transformers leaves GenerationConfig.__init__ unannotated
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=settings.max_new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else settings.temperature,
        top_p=None if greedy else settings.top_p,
        top_k=None if greedy else 0,
        eos_token_id=eos,
        pad_token_id=pad_id,
    )
    # every (prompt, sample) pair is one sequence; similar lengths share a batch to waste little padding.
    # Greedy decoding gives n equal responses: decode once and copy.
    copies = 1 if greedy else settings.n
    jobs = [(p, s) for p in range(len(prompt_ids)) for s in range(copies)]
    jobs.sort(key=lambda job: len(prompt_ids[job[0]]))
    responses = [[""] * copies for _ in prompt_ids]
    torch.manual_seed(settings.seed)
    with tqdm(total=len(jobs), desc="sampling", unit="seq", disable=not progress) as bar:
        for start in range(0, len(jobs), settings.batch_size):
            chunk = jobs[start : start + settings.batch_size]
            ids, mask = left_pad([prompt_ids[p] for p, _ in chunk], pad_id)
            input_ids = torch.tensor(ids, device=device)
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.tensor(mask, device=device),
                    generation_config=config,
                )
            texts = tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
            for (p, s), text in zip(chunk, texts, strict=True):
                responses[p][s] = text
            bar.update(len(chunk))
    return [r * (settings.n // copies) for r in responses]


def _sample_vllm(
    model_path: str, prompt_ids: list[list[int]], settings: SamplingSettings, progress: bool
) -> list[list[str]]:
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]  # vllm is an optional GPU extra

    llm = LLM(model=model_path, seed=settings.seed)
    params = SamplingParams(
        n=settings.n,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        seed=settings.seed,
    )
    prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
    results = llm.generate(prompts, params, use_tqdm=progress)
    return [[o.text for o in r.outputs] for r in results]


def _first(token_ids: int | Sequence[int] | None) -> int:
    if token_ids is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    return token_ids if isinstance(token_ids, int) else int(token_ids[0])
