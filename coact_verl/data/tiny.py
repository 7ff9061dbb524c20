"""A tiny causal LM and tokenizer built locally, for the CPU demo and the tests (no hub download).

The tokenizer is a byte-level BPE (vocabulary 512, Qwen2's pre-tokenizer: one token per digit) trained on
arithmetic word problems, with a ChatML chat template; the model is a random 2-layer Qwen2 (hidden 64, about
0.1 M parameters, 0.4 MB).
``warmup_steps > 0`` fits it briefly on problems written in the GSM8K answer format, so that its
samples contain ``#### <number>`` answers and agree with one another some of the time, and on writing a
new problem from three example problems (the prompt of CoAct's question generation).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coact_verl.data.synthetic import arithmetic_problems
from coact_verl.tasks import build_generation_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen2ForCausalLM

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def train_chat_tokenizer(out_dir: Path, corpus: list[str], *, vocab_size: int = 512) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on ``corpus``, save it with the ChatML template in ``out_dir`` and return it as
    ``AutoTokenizer`` loads it next to a Qwen2 model.

    The BPE is trained behind Qwen2's own normaliser and pre-tokenizer (NFC; its split regex, which isolates
    every digit; byte-level), the ones ``AutoTokenizer`` rebuilds for a ``qwen2`` model whatever
    ``tokenizer.json`` says. Trained behind any other, the merges would make tokens (say ``" 8"``) that the
    loaded tokenizer never produces: a model fitted on them samples token ids that no verl worker's
    re-tokenization of the same text reproduces.
    """
    from tokenizers import (  # type: ignore[import-untyped]  # tokenizers ships no py.typed
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    # transformers leaves the fast tokenizer's __init__ unannotated
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    loaded: PreTrainedTokenizerBase = Qwen2Tokenizer.from_pretrained(out_dir)  # AutoTokenizer's class for qwen2
    return loaded


def tiny_qwen2(
    tokenizer: PreTrainedTokenizerBase, hidden_size: int, num_layers: int, max_positions: int
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2: intermediate size twice ``hidden_size``, 4 heads, 2 KV heads, tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)  # type: ignore[no-untyped-call]  # transformers leaves __init__ unannotated


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save ``model`` with a sampling generation config that stops at the tokenizer's end-of-turn token."""
    from transformers import GenerationConfig

    # transformers leaves GenerationConfig.__init__ unannotated
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    model.save_pretrained(out_dir)


def chat_sft_batch(
    tokenizer: PreTrainedTokenizerBase, examples: list[tuple[list[dict[str, str]], str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)``, shapes ``(B, T)``, for ``(messages, target)`` pairs; labels cover the
    target (and its end-of-turn token) only."""
    rows, masks = [], []
    for messages, target in examples:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(target + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids)
        masks.append([False] * len(prompt_ids) + [True] * len(answer_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        labels[i, : len(row)] = torch.where(torch.tensor(mask), torch.tensor(row), -100)
    return ids, attention, labels


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    warmup_steps: int = 0,
    seed: int = 0,
) -> Path:
    """Write a tiny Qwen2 model + tokenizer to ``out_dir`` and return the path.

    Args:
        hidden_size: model width; intermediate size is twice it, 4 heads, 2 KV heads.
        num_layers: decoder layers.
        warmup_steps: supervised steps (batch 32, Adam lr 3e-3) on GSM8K-format arithmetic; 0 keeps it random.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    corpus = [p.question + "\n" + p.solution for p in arithmetic_problems(2000, seed=seed)]
    tokenizer = train_chat_tokenizer(out, corpus)
    model = tiny_qwen2(tokenizer, hidden_size, num_layers, max_positions=1024)
    if warmup_steps > 0:
        _warm_up(model, tokenizer, warmup_steps, seed)
    save_model(model, tokenizer, out)
    return out


def _warm_up(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, steps: int, seed: int) -> None:
    """Supervised fine-tuning on chat-formatted problem/solution pairs (loss on the solution only)."""
    rng = random.Random(seed)
    problems = arithmetic_problems(4000, seed=seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        writing = step % 4 == 3  # every fourth batch: write a new question from three others (long prompts)
        batch = rng.sample(problems, 8 if writing else 32)
        examples = []
        for problem in batch:
            if writing:
                seeds = [p.question for p in rng.sample(problems, 3)]
                examples.append((build_generation_prompt(seeds, "gsm8k"), problem.question))
            else:
                examples.append(([{"role": "user", "content": problem.prompt}], problem.solution))
        ids, attention, labels = chat_sft_batch(tokenizer, examples)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
