"""CoAct DPO(+NLL) through verl's entrypoint on CPU: the pairwise loss runs in the FSDP actor, starts at
log 2 (policy = reference), and with the NLL term off the step-1 update raises the implicit reward margin of the
pairs it trained on.

Those pairs come from step 1's rollout dump (re-derived with the shared core; the tiny tokenizer re-encodes a
response's text to the tokens it was sampled as, tests/data/test_tiny_tokenizer_on_cpu.py); the margin after step k is
β·[(log π_k(c) − log π_0(c)) − (log π_k(r) − log π_0(r))], computed with transformers on verl's per-step HF
checkpoints.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from coact_verl.config import CoActConfig
from tests.e2e.helpers import base_overrides, run_ok

pytestmark = pytest.mark.e2e
BETA = CoActConfig().dpo.beta
MAX_RESPONSE_TOKENS = 24  # data.max_response_length of configs/backend/cpu.yaml


def _pairs_from_step(dump_dir, step: int):
    import asyncio

    from coact_verl.config import RouterConfig
    from coact_verl.group.labeler import GroupLabeler, GroupRequest

    groups = [g for key, g in _dumped_groups_by_step(dump_dir).items() if key == step][0]
    labeler = GroupLabeler(CoActConfig(router=RouterConfig(policy="self_only")))

    async def label():
        pairs = []
        for prompt, responses in groups:
            outcome = await labeler.label(GroupRequest("p", "q", "gsm8k", step, tuple(responses)))
            if outcome.pair:
                pairs.append((prompt, responses[outcome.pair[0]], responses[outcome.pair[1]]))
        return pairs

    try:
        return asyncio.run(label())
    finally:
        labeler.clusterer.close()


def _dumped_groups_by_step(dump_dir):
    import json
    from collections import defaultdict

    by_step = {}
    for path in sorted(dump_dir.glob("*.jsonl")):
        groups = defaultdict(list)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            uid, session, _ = row["uid"].rsplit("_", 2)
            groups[uid].append((int(session), row["input"], row["output"]))
        by_step[int(path.stem)] = [(items[0][1], [text for _, _, text in sorted(items)]) for items in groups.values()]
    return by_step


def _sequence_logps(model, tokenizer, prompt_text: str, response: str) -> float:
    """log π(response | prompt), the response's tokens as the rollout produced them: its text's tokens, then the
    end-of-turn token unless the response filled ``data.max_response_length`` (truncated, no end)."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(response_ids) < MAX_RESPONSE_TOKENS:
        response_ids.append(tokenizer.eos_token_id)
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, len(prompt_ids) - 1 : -1].float(), -1)
    return logps.gather(-1, torch.tensor(response_ids).unsqueeze(-1)).sum().item()


def test_dpo_loss_starts_at_log2_and_the_trained_pairs_margin_rises(tiny_assets, tmp_path):
    train = pd.read_parquet(tiny_assets["train"]).head(16)  # the same 16 prompts every step
    train_path = tmp_path / "train16.parquet"
    train.to_parquet(train_path)
    overrides = base_overrides({**tiny_assets, "train": train_path}, 3) + [
        "coact.router.policy=self_only",
        # Pure DPO: at policy = reference its gradient is (β/2)·∇margin, so the step-1 update raises the mean margin
        # of its pairs. The NLL term pulls up the chosen response's tokens, which the rejected one mostly shares, and
        # under Adam's first (sign-like) step it can move the margin either way.
        "coact.dpo.nll_weight=0",
        f"trainer.rollout_data_dir={tmp_path / 'dump'}",
        "trainer.save_freq=1",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        "actor_rollout_ref.actor.optim.lr=3e-4",
        # 16 groups a step: enough pairs (a group has one about 40% of the time with this model)
        "data.train_batch_size=16",
        "actor_rollout_ref.actor.ppo_mini_batch_size=16",
    ]
    run = run_ok("coact_dpo_cpu", overrides, tmp_path / "dpo.log")
    assert sorted(run.steps) == [1, 2, 3]
    assert run.steps[1]["actor/dpo/dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference
    assert sum(run.metric("actor/dpo/pairs")) > 0 and any(g > 0 for g in run.metric("actor/grad_norm"))

    pairs = _pairs_from_step(tmp_path / "dump", 1)
    assert len(pairs) >= 2, "step 1 produced too few pairs to measure"
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    prompts = {}
    for row in train.to_dict("records"):
        content = row["prompt"][0]["content"]
        prompts[content] = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def full_prompt(decoded_input: str) -> str:
        return next(p for content, p in prompts.items() if content in decoded_input)

    def logps(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return [
            (_sequence_logps(model, tokenizer, full_prompt(x), c), _sequence_logps(model, tokenizer, full_prompt(x), r))
            for x, c, r in pairs
        ]

    reference = logps(tiny_assets["model"])
    margins = []
    for step in (1, 2, 3):
        policy = logps(tmp_path / "ckpt" / f"global_step_{step}" / "actor" / "huggingface")
        margin = sum(
            BETA * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, reference, strict=True)
        ) / len(pairs)
        margins.append(margin)
    # Step 1 trained on exactly these pairs: its update raises their margin over the reference. Steps 2 and 3 train
    # on fresh samples, which may move these pairs either way (e.g. 0.35, 0.31, 0.16), so only step 1 is asserted.
    assert margins[0] > 0, margins


def test_dpo_trains_on_user_edits_and_attentive_votes(tiny_assets, tmp_path):
    """Edits and votes submitted to the oracle service become DPO pairs: inattentive voters are filtered out by
    their EM attentiveness, the pairs are trained on in the following steps, and the edited response gains
    log-probability over the original relative to the reference (the DPO margin rises above 0)."""
    import httpx

    from coact_verl.oracle.local import start_local_service, stop_local_service

    admin_token = "admin-e2e"
    url, proc = start_local_service(
        str(tmp_path / "oracle.sqlite"),
        gold_path=str(tiny_assets["train_gold"]),
        admin_token=admin_token,
        trainer_token="coact-trainer",
        extra_args=["--vote-mu", "0.8"],
        log_path=str(tmp_path / "oracle.log"),
    )
    try:
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            careful, careless = (admin.post("/v1/annotators", json={"name": n}).json()["token"] for n in "ab")
        rows = pd.read_parquet(tiny_assets["train"]).head(4)
        answers = dict(pd.read_parquet(tiny_assets["train_gold"])[["prompt_id", "answer"]].itertuples(index=False))
        edits = [  # (question as the user saw it, the model's answer, the user's edit)
            (row["prompt"][0]["content"], "#### 7", f"The answer is #### {answers[row['extra_info']['prompt_id']]}")
            for row in rows.to_dict("records")
        ]
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {careful}"}) as user:
            for i, (question, original, edited) in enumerate(edits):
                body = {"key": f"e{i}", "prompt_id": f"e{i}", "prompt": question, "task": "gsm8k"}
                response = user.post("/v1/edits", json={**body, "original": original, "edited": edited})
                assert response.status_code == 200, response.text

        controls = [  # control comparisons: the service knows the better side, annotators only pick
            {"prompt_id": f"v{i}", "prompt": f"What is {i} + 1?", "task": "gsm8k", "response_a": f"#### {i + 1}",
             "response_b": f"#### {i + 2}", "stronger": "a", "better": "a"}
            for i in range(40)
        ]  # fmt: skip
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            assert admin.post("/v1/comparisons", json={"comparisons": controls}).status_code == 200
        for token, picks_right in ((careful, lambda i: True), (careless, lambda i: i % 2 == 0)):
            with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as user:
                served = user.get("/v1/comparisons/next", params={"limit": 100}).json()["comparisons"]
                votes = [{"key": f"v-{c['ticket']}", "ticket": c["ticket"],
                          "picked": "a" if picks_right(int(c["prompt_id"][1:])) else "b"} for c in served]  # fmt: skip
                assert len(votes) == 40
                assert user.post("/v1/votes/batch", json={"votes": votes}).status_code == 200

        overrides = base_overrides(tiny_assets, 3) + [
            f"coact.oracle.url={url}",
            "coact.oracle.token=coact-trainer",
            "coact.router.policy=self_only",
            "coact.feedback.pairs=True",
            "coact.feedback.max_pairs_per_step=4",
            "trainer.save_freq=1",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
            "actor_rollout_ref.actor.optim.lr=3e-4",
        ]
        run = run_ok("coact_dpo_cpu", overrides, tmp_path / "feedback.log")
    finally:
        stop_local_service(proc)
    assert sorted(run.steps) == [1, 2, 3]
    # step 1 reads 4 edits and the careful voter's 40 votes; the careless voter (η̂ = 0) is left out
    assert run.steps[1]["coact/feedback/read"] == 44
    assert [run.steps[s]["coact/feedback/batch_rows"] for s in (1, 2, 3)] == [0, 16, 16]  # 4 pairs x n=4 rows
    assert [run.steps[s]["coact/feedback/served"] for s in (1, 2, 3)] == [0, 4, 8]
    # dpo/pairs is a mean over the step's 4 micro-batches (32 rows / 8); the 4 user pairs always form pairs
    assert run.steps[2]["actor/dpo/pairs"] * 4 >= 4 and run.steps[3]["actor/dpo/pairs"] * 4 >= 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])

    def edit_margin(model_dir) -> float:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        total = 0.0
        for question, original, edited in edits:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
            )
            total += _sequence_logps(model, tokenizer, prompt, edited) - _sequence_logps(
                model, tokenizer, prompt, original
            )
        return total / len(edits)

    before, after = (edit_margin(tmp_path / "ckpt" / f"global_step_{s}" / "actor" / "huggingface") for s in (1, 2))
    assert after > before, (before, after)  # step 2, the step that trained on the edits, moved toward them


def test_dpo_on_two_data_parallel_ranks_with_two_mini_batches(tiny_assets, tmp_path):
    """The real trainer with 2 FSDP actor ranks on gloo and 2 mini-batches (optimizer steps) per training step:
    pairs are laid out across both ranks without splitting one, and the pairwise loss trains."""
    overrides = base_overrides(tiny_assets, 2) + [
        "coact.router.policy=self_only",
        "trainer.n_gpus_per_node=2",
        "ray_kwargs.ray_init.num_gpus=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    ]
    run = run_ok("coact_dpo_cpu", overrides, tmp_path / "dpo2.log")
    log = run.log_path.read_text()
    assert sorted(run.steps) == [1, 2]
    # one fused actor/rollout/reference worker process per rank (one on a single rank)
    assert len(set(re.findall(r"WorkerDict pid=(\d+)", log))) == 2, "the actor did not run on two ranks"
    assert sum(run.metric("coact/dpo/pairs")) > 0 and all(math.isfinite(x) for x in run.metric("actor/dpo/dpo_loss"))
    assert any(g > 0 for g in run.metric("actor/grad_norm"))
