"""DPO + NLL loss: hand-computed values, invariants, and one optimiser step on a tiny LM."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from coact_verl.losses.dpo import dpo_nll_loss, sequence_logps

# Two pairs (β = 0.5, λ = 1):
#   pair 0: πc=-10.0 πr=-12.0 refc=-11.0 refr=-11.5 nll=2.5 -> margin = (1.0) - (-0.5) = 1.5
#   pair 1: πc=-20.0 πr=-9.0  refc=-19.0 refr=-10.0 nll=4.0 -> margin = (-1.0) - (1.0) = -2.0
PC, PR, RC, RR, NLL = [-10.0, -20.0], [-12.0, -9.0], [-11.0, -19.0], [-11.5, -10.0], [2.5, 4.0]


def _expected(beta=0.5, lam=1.0):
    """Plain-Python reference: loss_p = log(1 + exp(-β·margin_p)) + λ·nll_p.

    pair 0: β·margin = 0.75 -> log(1 + e^-0.75) = log(1.47237) = 0.38687 -> + 2.5 = 2.88687
    pair 1: β·margin = -1.0 -> log(1 + e^1.0)   = log(3.71828) = 1.31326 -> + 4.0 = 5.31326
    """
    out = []
    for pc, pr, rc, rr, nll in zip(PC, PR, RC, RR, NLL, strict=True):
        margin = (pc - rc) - (pr - rr)
        out.append(math.log1p(math.exp(-beta * margin)) + lam * nll)
    return out


def _tensors(dtype=torch.float32):
    return [torch.tensor(v, dtype=dtype) for v in (PC, PR, RC, RR, NLL)]


def test_matches_hand_computation():
    expected = _expected()
    assert expected == pytest.approx([2.88687, 5.31326], abs=1e-5)
    per_pair, metrics = dpo_nll_loss(*_tensors(), beta=0.5, nll_weight=1.0, reduction="none")
    assert per_pair.tolist() == pytest.approx(expected, abs=1e-5)
    mean, _ = dpo_nll_loss(*_tensors())
    assert mean.item() == pytest.approx(sum(expected) / 2, abs=1e-5)
    total, _ = dpo_nll_loss(*_tensors(), reduction="sum")
    assert total.item() == pytest.approx(sum(expected), abs=1e-5)
    assert metrics["reward_margin"] == pytest.approx((0.75 - 1.0) / 2, abs=1e-6)
    assert metrics["reward_accuracy"] == 0.5
    assert metrics["chosen_reward"] == pytest.approx((0.5 * 1.0 + 0.5 * -1.0) / 2, abs=1e-6)
    assert metrics["rejected_reward"] == pytest.approx((0.5 * -0.5 + 0.5 * 1.0) / 2, abs=1e-6)
    assert metrics["nll"] == pytest.approx(3.25)
    assert metrics["loss"] == pytest.approx(metrics["dpo_loss"] + metrics["nll"], abs=1e-6)


def test_pair_weights_give_a_weighted_mean():
    expected = _expected(beta=0.1, lam=0.3)
    loss, _ = dpo_nll_loss(*_tensors(), beta=0.1, nll_weight=0.3, pair_weights=torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx((3 * expected[0] + expected[1]) / 4, abs=1e-5)
    zero, _ = dpo_nll_loss(*_tensors(), pair_weights=torch.zeros(2))
    assert zero.item() == 0.0


def test_policy_equal_to_reference_gives_log_two():
    logps = torch.tensor([-3.0, -50.0, -0.5])
    loss, metrics = dpo_nll_loss(logps, logps - 7, logps, logps - 7, torch.zeros(3), beta=0.5, nll_weight=1.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["reward_margin"] == 0.0 and metrics["reward_accuracy"] == 0.0


def test_low_precision_inputs_and_extreme_margins_stay_finite():
    big = torch.tensor([1e4, -1e4], dtype=torch.bfloat16, requires_grad=True)
    zero = torch.zeros(2, dtype=torch.bfloat16)
    loss, _ = dpo_nll_loss(big, zero, zero, zero, zero, reduction="none")
    assert loss.dtype == torch.float32
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6)
    as_bf16 = big[1].detach().float().item()  # 1e4 rounds to 9984 in bfloat16
    assert loss[1].item() == pytest.approx(-0.5 * as_bf16, rel=1e-6)  # -log σ(-4992) ≈ 4992, not inf
    loss.sum().backward()
    assert torch.isfinite(big.grad.float()).all() and big.grad[1].item() < 0


def test_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr, rc, rr, nll = _tensors()
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, _ = dpo_nll_loss(pc, pr, rc, rr, nll)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()


def test_shape_and_argument_checks():
    pc, pr, rc, rr, nll = _tensors()
    with pytest.raises(ValueError):
        dpo_nll_loss(pc, pr[:1], rc, rr, nll)
    with pytest.raises(ValueError):
        dpo_nll_loss(pc, pr, rc, rr, nll, reduction="avg")
    with pytest.raises(ValueError):
        dpo_nll_loss(pc, pr, rc, rr, nll, beta=0.0)


def test_sequence_logps_ignores_masked_positions():
    token_logps = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, float("nan"), -1.5], [-9.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]])
    total, mean = sequence_logps(token_logps.to(torch.bfloat16), mask)
    assert total.dtype == torch.float32
    assert total.tolist() == pytest.approx([-3.0, -2.0, 0.0])
    assert mean.tolist() == pytest.approx([-1.5, -1.0, 0.0])


class TinyLM(torch.nn.Module):
    """Next-token model: embedding -> tanh -> linear head over a 12-token vocabulary."""

    def __init__(self, vocab=12, hidden=16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens)))


def _response_logps(model, prompt, responses):
    """Σ and mean log p(response tokens | previous token) for each response after ``prompt``, shape (B,)."""
    seqs = torch.stack([torch.cat([prompt, r]) for r in responses])
    logits = model(seqs[:, :-1])
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), -1, seqs[:, 1:, None]).squeeze(-1)
    mask = torch.zeros_like(token_logps)
    mask[:, len(prompt) - 1 :] = 1.0
    return sequence_logps(token_logps, mask)


@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_one_step_on_a_tiny_lm_raises_the_margin(optimiser):
    torch.manual_seed(0)
    policy = TinyLM()
    reference = copy.deepcopy(policy).requires_grad_(False)
    prompt = torch.tensor([1, 2, 3])
    chosen, rejected = torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11])

    def margin():
        with torch.no_grad():
            (pol, _), (ref, _) = (
                _response_logps(policy, prompt, [chosen, rejected]),
                _response_logps(reference, prompt, [chosen, rejected]),
            )
        return float((pol[0] - ref[0]) - (pol[1] - ref[1]))

    assert margin() == pytest.approx(0.0, abs=1e-6)  # policy == reference before the step
    opt = (torch.optim.SGD if optimiser == "sgd" else torch.optim.Adam)(policy.parameters(), lr=0.05)
    pol_sum, pol_mean = _response_logps(policy, prompt, [chosen, rejected])
    with torch.no_grad():
        ref_sum, _ = _response_logps(reference, prompt, [chosen, rejected])
    loss, metrics = dpo_nll_loss(pol_sum[:1], pol_sum[1:], ref_sum[:1], ref_sum[1:], -pol_mean[:1])
    assert metrics["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert margin() > 0.5  # measured: about 1.1 (SGD) and 4.3 (Adam)
    new_sum, new_mean = _response_logps(policy, prompt, [chosen, rejected])
    new_loss, _ = dpo_nll_loss(new_sum[:1], new_sum[1:], ref_sum[:1], ref_sum[1:], -new_mean[:1])
    assert new_loss.item() < loss.item()
