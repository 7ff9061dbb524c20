"""The testbed's model: a small Qwen2 with a digit-level BPE tokenizer, warmed up on the testbed corpus.

Built locally (no hub download). The tokenizer is a byte-level BPE (vocabulary 512) whose pre-tokenizer,
Qwen2's, splits every digit into its own token, so that arithmetic is learnable by a small model; it has a
ChatML chat template. The model is a 2-layer Qwen2 (hidden 128, about 0.3 M parameters). The warm-up is supervised
fine-tuning on :func:`~coact_verl.testbed.tasks.warmup_problems` (loss on the solution only): afterwards the
model solves the honest kinds mostly right and the trap kinds mostly with the trap rule.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from coact_verl.data.tiny import chat_sft_batch, save_model, tiny_qwen2, train_chat_tokenizer
from coact_verl.testbed.tasks import TestbedConfig, TestbedProblem, sample_problems, warmup_problems

WARMUP_FILE = "testbed_warmup.json"  # next to the weights: the knobs and warm-up settings it was built with


def build_testbed_model(
    out_dir: str | Path,
    cfg: TestbedConfig | None = None,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    warmup_steps: int = 500,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Write the warmed-up model + tokenizer to ``out_dir`` and return it.

    Args:
        cfg: testbed knobs (the warm-up error rate shapes the trap kinds).
        hidden_size: model width; intermediate size twice it, 4 heads, 2 KV heads.
        num_layers: decoder layers.
        warmup_steps: supervised steps of ``batch_size`` problems (Adam, ``lr`` with cosine decay).
    """
    cfg = cfg or TestbedConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    corpus = [p.prompt + "\n" + p.solution for p in warmup_problems(3000, cfg, seed=7)]
    tokenizer = train_chat_tokenizer(out, corpus)
    model = tiny_qwen2(tokenizer, hidden_size, num_layers, max_positions=512)
    start = time.monotonic()
    final_loss = warm_up(model, tokenizer, cfg, warmup_steps, batch_size, lr, seed)
    save_model(model, tokenizer, out)
    record = {
        "testbed": asdict(cfg),
        "warmup_steps": warmup_steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "final_loss": final_loss,
        "warmup_s": round(time.monotonic() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / WARMUP_FILE).write_text(json.dumps(record, indent=1))
    return out


def warm_up(
    model: torch.nn.Module, tokenizer: Any, cfg: TestbedConfig, steps: int, batch_size: int, lr: float, seed: int
) -> float:
    """Supervised fine-tuning on the warm-up corpus; returns the mean loss of the last 20 steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is faster than several contending for cores
    try:
        return _fit(model, tokenizer, cfg, steps, batch_size, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(
    model: torch.nn.Module, tokenizer: Any, cfg: TestbedConfig, steps: int, batch_size: int, lr: float, seed: int
) -> float:
    rng = random.Random(seed)
    corpus = warmup_problems(max(4000, steps * batch_size // 4), cfg, seed=seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        batch = rng.sample(corpus, batch_size)
        examples = [([{"role": "user", "content": p.prompt}], p.solution) for p in batch]
        ids, attention, labels = chat_sft_batch(tokenizer, examples)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach().item())
    model.eval()
    return sum(losses[-20:]) / max(len(losses[-20:]), 1)


@torch.no_grad()
def sample_answers(
    model_dir: str | Path,
    problems: Sequence[TestbedProblem],
    samples: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
) -> list[tuple[str, list[str]]]:
    """For each problem: (greedy answer text, list of ``samples`` sampled response texts).

    A quick offline probe of the warmed-up model (no verl), used by tests and the testbed's calibration check.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        for p in problems
    ]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    common = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    greedy = model.generate(**enc, do_sample=False, **common)
    sampled = model.generate(
        **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples, **common
    )

    def decode(rows: torch.Tensor) -> list[str]:
        texts: list[str] = tokenizer.batch_decode(rows[:, width:], skip_special_tokens=True)
        return texts

    greedy_text, sampled_text = decode(greedy), decode(sampled)
    return [(greedy_text[i], sampled_text[i * samples : (i + 1) * samples]) for i in range(len(problems))]


__all__ = ["WARMUP_FILE", "build_testbed_model", "sample_answers", "sample_problems", "warm_up"]
