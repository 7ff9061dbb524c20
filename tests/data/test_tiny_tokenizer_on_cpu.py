"""The tiny model's tokenizer is the one every verl worker loads: the ids the model was fitted on and samples are
the ids ``AutoTokenizer`` gives for the same text, so a response's text round-trips to the tokens it was sampled as."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from coact_verl.data.synthetic import arithmetic_problems
from coact_verl.data.tiny import build_tiny_model, save_model, tiny_qwen2, train_chat_tokenizer


def test_the_trained_tokenizer_tokenizes_like_the_loaded_one(tmp_path):
    corpus = [p.question + "\n" + p.solution for p in arithmetic_problems(300, seed=0)]
    trained = train_chat_tokenizer(tmp_path, corpus[:200])  # what the model is fitted with
    save_model(tiny_qwen2(trained, 16, 1, 64), trained, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # what verl's workers load
    texts = corpus[200:] + ["3 + 8 = 11\n#### 11", "It costs $1,500 (about 12%)."]
    for text in texts:
        assert (
            trained(text, add_special_tokens=False)["input_ids"] == loaded(text, add_special_tokens=False)["input_ids"]
        ), text


def test_sampled_responses_round_trip_through_their_text(tmp_path):
    """What the rollout decodes and a reward, a dump or a test re-encodes is what the policy sampled."""
    model_dir = build_tiny_model(tmp_path, warmup_steps=60)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    prompts = [p.prompt for p in arithmetic_problems(8, seed=3)]
    same = total = 0
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, do_sample=True, max_new_tokens=24, num_return_sequences=4)
        for row in out[:, ids.shape[1] :].tolist():
            sampled = [t for t in row if t != tokenizer.pad_token_id]
            decoded = tokenizer.decode(sampled, skip_special_tokens=True)
            eos = [tokenizer.eos_token_id] if sampled and sampled[-1] == tokenizer.eos_token_id else []
            same += tokenizer(decoded, add_special_tokens=False)["input_ids"] + eos == sampled
            total += 1
    assert same / total >= 0.9, f"{same}/{total} samples round-trip"
