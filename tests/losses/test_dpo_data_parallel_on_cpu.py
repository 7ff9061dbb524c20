"""The DPO loss in verl's actor across data-parallel ranks and mini-batches: 2 gloo ranks with gradients averaged
as FSDP/DDP do give the 1-rank gradient on the same pairs; with several mini-batches per step each optimizer
step's gradient is the weighted mean over that mini-batch's own pairs; the pair layout never splits a pair;
bf16 inputs work.

Micro-batches are built as verl's engine hands them to the loss (jagged ``prompts``/``responses``/
``response_mask``/``ref_log_prob``, per-row ``uid`` and ``extra_fields``, ``dp_size`` and the trainer's
non-tensor keys), and ``model_output["log_probs"]`` is the no-padding layout over whole sequences.
"""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import verl.utils.tensordict_utils as tu

from coact_verl.adapters.dpo import PAIRS_KEY, dpo_loss_fn
from coact_verl.losses import pair_layout, pairs_per_mini_batch

VOCAB, PAIRS, MICRO, BETA, NLL = 11, 6, 4, 0.5, 1.0


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)

    def sequence_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """Entry t = log p(ids[t + 1] | ids[:t + 1]); the last entry 0 (verl's shifted layout)."""
        logp = torch.log_softmax(self.head(torch.tanh(self.embed(ids[:-1]))), -1)
        return torch.cat([logp.gather(-1, ids[1:, None])[:, 0], logp.new_zeros(1)])


def _pairs(count=PAIRS):
    """``count`` pairs: (uid, prompt, chosen, rejected, ref_chosen, ref_rejected, weight); lengths differ."""
    gen = torch.Generator().manual_seed(1)
    pairs = []
    for p in range(count):
        prompt = torch.randint(0, VOCAB, (2 + p % 3,), generator=gen)
        chosen = torch.randint(0, VOCAB, (3 + p % 2,), generator=gen)
        rejected = torch.randint(0, VOCAB, (2 + (p + 1) % 4,), generator=gen)
        ref_c = -torch.rand(len(chosen), generator=gen) * 3
        ref_r = -torch.rand(len(rejected), generator=gen) * 3
        pairs.append((f"u{p}", prompt, chosen, rejected, ref_c, ref_r, 1.0 if p % 2 else 0.5))
    return pairs


def _rows(pair):
    uid, prompt, chosen, rejected, ref_c, ref_r, weight = pair
    if uid is None:  # a padding pair: verl's synthetic sample, no pair role
        pad = torch.zeros(3, dtype=torch.int64)
        return [(f"pad{k}", pad, pad[:1], torch.zeros(1), "", 0.0) for k in range(2)]
    return [(uid, prompt, chosen, ref_c, "chosen", weight), (uid, prompt, rejected, ref_r, "rejected", weight)]


def _micro_batch(rows, dp_size, pairs_in_mini_batch, dtype=torch.float32):
    def nested(values):
        return torch.nested.as_nested_tensor(list(values), layout=torch.jagged)

    return tu.get_tensordict(
        {
            "prompts": nested(r[1] for r in rows),
            "responses": nested(r[2] for r in rows),
            "response_mask": nested(torch.ones(len(r[2]), dtype=torch.int64) for r in rows),
            "ref_log_prob": nested(r[3].to(dtype) for r in rows),
            "uid": [r[0] for r in rows],
            "extra_fields": [{"reward_extra_info": {"coact_pair_role": r[4], "coact_pair_weight": r[5]}} for r in rows],
        },
        non_tensor_dict={"dp_size": dp_size, "global_batch_size": 2 * len(rows), PAIRS_KEY: pairs_in_mini_batch},
    )


def _mini_batch_gradients(model, rank, world, num_mini=1, num_pairs=PAIRS, dtype=torch.float32):
    """verl's path on one rank: its chunk of the pair layout, split into ``num_mini`` mini-batches, each run
    micro-batch by micro-batch with loss.backward(). Returns (gradient per mini-batch, loss metrics)."""
    pairs = _pairs(num_pairs)
    order, micro_rows = pair_layout(len(pairs), world, num_mini, MICRO)
    norm = {pairs[index][0]: count for index, count in pairs_per_mini_batch(order, world, num_mini).items()}
    chunk = order[rank * len(order) // world : (rank + 1) * len(order) // world]
    per_mini = len(chunk) // num_mini
    gradients, metrics = [], []
    for mini in range(num_mini):
        model.zero_grad()
        slots = chunk[mini * per_mini : (mini + 1) * per_mini]
        rows = [row for slot in slots for row in _rows(pairs[slot] if slot is not None else (None,) * 7)]
        assert len(rows) % micro_rows == 0
        for start in range(0, len(rows), micro_rows):
            micro = rows[start : start + micro_rows]
            data = _micro_batch(micro, world, norm, dtype)
            log_probs = torch.cat([model.sequence_log_probs(torch.cat([r[1], r[2]])).to(dtype) for r in micro])
            loss, info = dpo_loss_fn({"log_probs": log_probs}, data, beta=BETA, nll_weight=NLL)
            loss.backward()
            metrics.append(info)
        gradients.append([p.grad.clone() for p in model.parameters()])
    return gradients, metrics


def _accumulate_gradient(model, rank, world, dtype=torch.float32):
    gradients, metrics = _mini_batch_gradients(model, rank, world, dtype=dtype)
    for param, grad in zip(model.parameters(), gradients[0], strict=True):
        param.grad = grad
    return metrics


def _rank_main(rank, world, port, out_dir, num_mini=1, num_pairs=PAIRS):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gradients, _ = _mini_batch_gradients(TinyLM(), rank, world, num_mini, num_pairs)
        for grads in gradients:  # FSDP/DDP: each step's gradient is averaged over the data-parallel ranks
            for grad in grads:
                dist.all_reduce(grad, op=dist.ReduceOp.SUM)
                grad /= world
        if rank == 0:
            torch.save(gradients, os.path.join(out_dir, "grads.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reference_gradient(pairs=None):
    """The plain weighted mean over ``pairs`` (default: all) of −log σ(β·margin) + λ·NLL/|chosen|, on one process."""
    model = TinyLM()
    terms, weights = [], []
    for _uid, prompt, chosen, rejected, ref_c, ref_r, weight in pairs or _pairs():
        pc = model.sequence_log_probs(torch.cat([prompt, chosen]))[len(prompt) - 1 : -1].sum()
        pr = model.sequence_log_probs(torch.cat([prompt, rejected]))[len(prompt) - 1 : -1].sum()
        margin = BETA * ((pc - ref_c.sum()) - (pr - ref_r.sum()))
        terms.append(-torch.nn.functional.logsigmoid(margin) + NLL * (-pc / len(chosen)))
        weights.append(weight)
    (torch.stack(terms) * torch.tensor(weights)).sum().div(len(terms)).backward()
    return [p.grad for p in model.parameters()]


def test_two_gloo_ranks_give_the_one_rank_gradient(tmp_path):
    one_rank = TinyLM()
    _accumulate_gradient(one_rank, 0, 1)
    single = [p.grad for p in one_rank.parameters()]
    for got, want in zip(single, _reference_gradient(), strict=True):  # 1 rank = the mean over pairs
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    (two_ranks,) = torch.load(tmp_path / "grads.pt")
    assert any(g.abs().sum() > 0 for g in two_ranks)
    for got, want in zip(two_ranks, single, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _mini_batch_pairs(num_pairs, world, num_mini):
    """The pairs of each global mini-batch, as the layout deals them."""
    pairs = _pairs(num_pairs)
    order, _ = pair_layout(num_pairs, world, num_mini, MICRO)
    per_slot = len(order) // (world * num_mini)
    minis = [[] for _ in range(num_mini)]
    for position, index in enumerate(order):
        if index is not None:
            minis[(position // per_slot) % num_mini].append(pairs[index])
    return minis


def test_several_mini_batches_each_step_is_the_mean_over_its_own_pairs():
    """5 pairs in 3 mini-batches hold 2, 2 and 1 pairs: each optimizer step's gradient is the weighted mean
    over its own pairs (a normaliser of 5/3 pairs per mini-batch would over- or under-weight each step)."""
    minis = _mini_batch_pairs(5, 1, 3)
    assert sorted(len(m) for m in minis) == [1, 2, 2]
    gradients, _ = _mini_batch_gradients(TinyLM(), 0, 1, num_mini=3, num_pairs=5)
    for got, pairs in zip(gradients, minis, strict=True):
        for g, want in zip(got, _reference_gradient(pairs), strict=True):
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6)


def test_two_gloo_ranks_and_two_mini_batches_each_step_is_the_mean_over_its_own_pairs(tmp_path):
    minis = _mini_batch_pairs(5, 2, 2)
    assert sorted(len(m) for m in minis) == [2, 3]
    args = (2, _free_port(), str(tmp_path), 2, 5)
    mp.start_processes(_rank_main, args=args, nprocs=2, join=True, start_method="spawn")
    for got, pairs in zip(torch.load(tmp_path / "grads.pt"), minis, strict=True):
        for g, want in zip(got, _reference_gradient(pairs), strict=True):
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pairs", [0, 1, 5, 6, 17, 64])
@pytest.mark.parametrize(("dp_size", "num_mini", "micro"), [(1, 1, 8), (2, 1, 4), (16, 1, 8), (8, 2, 2), (4, 3, 6)])
def test_the_layout_never_splits_a_pair(pairs, dp_size, num_mini, micro):
    order, micro_rows = pair_layout(pairs, dp_size, num_mini, micro)
    assert sorted(i for i in order if i is not None) == list(range(pairs))
    rows = 2 * len(order)
    slot_rows = rows // (dp_size * num_mini)
    # equal (rank, mini-batch) slots, each a whole number of micro-batches, every boundary even
    assert rows % (dp_size * num_mini) == 0 and slot_rows % micro_rows == 0
    assert micro_rows % 2 == 0 and micro_rows <= micro
    # real pairs spread over the mini-batches as evenly as possible
    per_mini = [0] * num_mini
    for position, index in enumerate(order):
        if index is not None:
            per_mini[(2 * position // slot_rows) % num_mini] += 1
    assert max(per_mini) - min(per_mini) <= dp_size
    # no more padding than one slot's rounding
    assert len(order) - pairs < dp_size * num_mini * max(1, micro // 2) + dp_size * num_mini


def test_odd_micro_batch_is_refused():
    with pytest.raises(ValueError, match="even"):
        pair_layout(4, 1, 1, 3)


def test_loss_runs_in_bf16():
    """bf16 log-probs and reference (verl's default engine dtype): a finite loss near the fp32 one, gradients flow."""
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = TinyLM().to(dtype)
        metrics = _accumulate_gradient(model, 0, 1, dtype=dtype)
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters()])
        assert torch.isfinite(grads).all() and grads.abs().sum() > 0
        results[dtype] = (sum(m["dpo/loss"] * m["dpo/pairs"] for m in metrics) / PAIRS, grads)
    (loss32, grads32), (loss16, grads16) = results[torch.float32], results[torch.bfloat16]
    assert math.isfinite(loss16) and loss16 == pytest.approx(loss32, rel=0.05)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.95


def test_dpo_config_problems_name_every_missing_setting():
    from coact_verl.losses import dpo_config_problems

    good = {"ppo_micro_batch_size_per_gpu": 4, "shuffle": False, "use_dynamic_bsz": False, "use_kl_loss": True}
    assert dpo_config_problems(good, {"n": 4}, feedback_pairs=False, oracle=False) == []
    bad = {"ppo_micro_batch_size_per_gpu": 3, "shuffle": True, "use_kl_loss": False}
    problems = dpo_config_problems(bad, {"n": 1, "calculate_log_probs": True}, feedback_pairs=True, oracle=False)
    assert len(problems) == 6 and "got 3" in problems[0] and "got 1" in problems[3]
