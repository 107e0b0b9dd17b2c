"""The clipped policy loss: hand-computed values per variant, gradients, clipping sides, the KL term,
masking and the micro-batching contract."""

from __future__ import annotations

import math

import pytest
import torch

from rlpp.algo import LOSS_AGGREGATIONS, PolicyLossInput, policy_loss

F64 = torch.float64
VARIANTS = ("grpo", "dr_grpo", "dapo")


def from_ratios(ratios, advantages, mask, ref_shift=None) -> PolicyLossInput:
    """An input whose importance ratios are exactly ``ratios`` (old log-probs arbitrary)."""
    ratios = torch.tensor(ratios, dtype=F64)
    old = -torch.linspace(0.5, 3.0, ratios.numel(), dtype=F64).reshape(ratios.shape)
    logp = (old + ratios.log()).requires_grad_()
    ref = None if ref_shift is None else logp.detach() + torch.tensor(ref_shift, dtype=F64)
    return PolicyLossInput(logp, old, torch.tensor(advantages, dtype=F64), torch.tensor(mask), ref)


# Sequence 0: A = +1, tokens r = 1.5 (above 1.2: clipped to 1.2), 0.9; a masked token with r = 100.
#   per-token losses -1.2, -0.9: sum -2.1, mean -1.05.
# Sequence 1: A = -2, r = 0.5 (below 0.8: clipped, -min(-1, -1.6) = 1.6), 1.1 (2.2), 1.3 (a negative
#   advantage is not clipped above: -min(-2.6, -2.4) = 2.6): sum 6.4, mean 6.4 / 3.
# Clipped tokens: 2 of 5 (one high, one low); ratio mean (1.5 + 0.9 + 0.5 + 1.1 + 1.3) / 5 = 1.06.
TWO_SEQ = dict(ratios=[[1.5, 0.9, 100.0], [0.5, 1.1, 1.3]], advantages=[1.0, -2.0], mask=[[1, 1, 0], [1, 1, 1]])
TWO_SEQ_LOSS = {
    "grpo": (-1.05 + 6.4 / 3) / 2,  # 0.541666...
    "dr_grpo": (-2.1 / 4 + 6.4 / 4) / 2,  # max_len 4: 0.5375
    "dapo": (-2.1 + 6.4) / 5,  # 0.86
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_sequence_hand_values(variant):
    out = policy_loss(from_ratios(**TWO_SEQ), variant=variant, clip_low=0.2, clip_high=0.2, max_len=4)
    assert out.loss.item() == pytest.approx(TWO_SEQ_LOSS[variant], abs=1e-12)
    m = out.metrics
    assert m["pg_loss"] == m["loss"] == pytest.approx(TWO_SEQ_LOSS[variant], abs=1e-12)
    assert m["clip_frac"] == pytest.approx(0.4)
    assert m["clip_frac_high"] == pytest.approx(0.2)
    assert m["clip_frac_low"] == pytest.approx(0.2)
    assert m["ratio_mean"] == pytest.approx(1.06)
    assert m["tokens"] == 5.0
    assert "kl" not in m


def test_float_mask_and_bf16_logprobs_are_accepted():
    inp = from_ratios(**TWO_SEQ)
    out = policy_loss(
        PolicyLossInput(inp.logprobs, inp.old_logprobs, inp.advantages, inp.mask.to(torch.float32)),
        variant="dapo", clip_low=0.2, clip_high=0.2,
    )
    assert out.loss.item() == pytest.approx(0.86, abs=1e-12)
    lp = torch.zeros(1, 2, dtype=torch.bfloat16, requires_grad=True)
    out = policy_loss(PolicyLossInput(lp, lp.detach(), torch.ones(1), torch.ones(1, 2)), variant="grpo", clip_low=0.2, clip_high=0.2)
    assert out.loss.dtype == torch.float32 and out.loss.item() == -1.0


def test_asymmetric_clipping_sides():
    # One token per sequence, clip_low 0.2 (floor 0.8), clip_high 0.28 (ceiling 1.28), dapo (mean of 6).
    #   A=+1, r=1.25: under the ceiling, unclipped          -> -1.25
    #   A=+1, r=1.30: above the ceiling, clipped to 1.28    -> -1.28  (high)
    #   A=+1, r=0.70: below the floor, but A > 0 unclipped  -> -0.70
    #   A=-1, r=0.75: below the floor, clipped to 0.8       ->  0.80  (low)
    #   A=-1, r=1.50: above the ceiling, but A < 0 unclipped ->  1.50
    #   A=-1, r=0.85: inside                                ->  0.85
    ratios = [[1.25], [1.30], [0.70], [0.75], [1.50], [0.85]]
    adv = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    inp = from_ratios(ratios, adv, [[1]] * 6)
    out = policy_loss(inp, variant="dapo", clip_low=0.2, clip_high=0.28)
    assert out.loss.item() == pytest.approx((-1.25 - 1.28 - 0.70 + 0.80 + 1.50 + 0.85) / 6, abs=1e-12)
    assert out.metrics["clip_frac_high"] == pytest.approx(1 / 6)
    assert out.metrics["clip_frac_low"] == pytest.approx(1 / 6)
    assert out.metrics["clip_frac"] == pytest.approx(2 / 6)
    out.loss.backward()
    # d/dlogp of -r A is -r A: zero exactly where clipping is active.
    expected = torch.tensor([[-1.25], [0.0], [-0.70], [0.0], [1.50], [0.85]], dtype=F64) / 6
    torch.testing.assert_close(inp.logprobs.grad, expected, rtol=0, atol=1e-12)
    # The symmetric 0.2 clips r = 1.25 too.
    assert policy_loss(inp, variant="dapo", clip_low=0.2, clip_high=0.2).metrics["clip_frac_high"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_on_policy_gradient_is_vanilla_policy_gradient(variant):
    # With old == logp the ratio is 1 (never clipped), and the gradient is -A * grad(logp) times the
    # variant's weight: 1 / (n_i * N) for grpo, 1 / (max_len * N) for dr_grpo, 1 / total tokens for dapo.
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 5, generator=g, dtype=F64)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    out = policy_loss(PolicyLossInput(logp, logp.detach(), adv, mask), variant=variant, clip_low=0.2, clip_high=0.3, max_len=8)
    out.loss.backward()
    weight = {
        "grpo": 1.0 / (torch.tensor([3.0, 5.0, 1.0], dtype=F64) * 3),
        "dr_grpo": torch.full((3,), 1.0 / (8 * 3), dtype=F64),
        "dapo": torch.full((3,), 1.0 / 9, dtype=F64),
    }[variant]
    expected = -(adv * weight).unsqueeze(1) * mask
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-12)
    assert out.metrics["clip_frac"] == 0.0 and out.metrics["ratio_mean"] == 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_micro_batch_sum_equals_whole_batch(variant):
    g = torch.Generator().manual_seed(1)
    n, t = 7, 9
    lengths = torch.tensor([9, 1, 4, 0, 6, 2, 8])  # includes an empty completion
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    old = -3 * torch.rand(n, t, generator=g, dtype=F64)
    logp = old + 0.4 * torch.randn(n, t, generator=g, dtype=F64)  # ratios spread across both clip bounds
    ref = old + 0.3 * torch.randn(n, t, generator=g, dtype=F64)
    adv = torch.randn(n, generator=g, dtype=F64)
    kw = dict(variant=variant, clip_low=0.2, clip_high=0.28, kl_coef=0.05, max_len=12)

    whole_leaf = logp.clone().requires_grad_()
    whole = policy_loss(PolicyLossInput(whole_leaf, old, adv, mask, ref), **kw)
    whole.loss.backward()
    assert 0 < whole.metrics["clip_frac"] < 1

    total, grad = 0.0, torch.zeros_like(logp)
    for lo, hi in ((0, 2), (2, 3), (3, 7)):
        width = max(int(lengths[lo:hi].max()), 1)  # each micro-batch padded to its own length
        cols = slice(0, width)
        leaf = logp[lo:hi, cols].clone().requires_grad_()
        part = policy_loss(
            PolicyLossInput(leaf, old[lo:hi, cols], adv[lo:hi], mask[lo:hi, cols], ref[lo:hi, cols]),
            total_sequences=n, total_tokens=int(mask.sum()), **kw,
        )
        part.loss.backward()
        total += part.loss.item()
        grad[lo:hi, cols] = leaf.grad
    assert total == pytest.approx(whole.loss.item(), abs=1e-12)
    torch.testing.assert_close(grad, whole_leaf.grad, rtol=0, atol=1e-12)


def test_kl_zero_at_reference_and_hand_value():
    base = policy_loss(from_ratios(**TWO_SEQ), variant="dapo", clip_low=0.2, clip_high=0.2)
    same = policy_loss(from_ratios(**TWO_SEQ, ref_shift=[[0.0] * 3] * 2), variant="dapo", clip_low=0.2, clip_high=0.2, kl_coef=0.5)
    assert same.metrics["kl"] == 0.0
    assert same.loss.item() == pytest.approx(base.loss.item(), abs=1e-15)

    # d = ref - logp = +ln 2 on two tokens: k3 = 2 - ln 2 - 1; d = -ln 2 on one: 1/2 + ln 2 - 1. The
    # masked token's shift (50) must not count. KL mean over 5 tokens; dapo adds kl_coef * sum / 5.
    ln2 = math.log(2)
    shift = [[ln2, 0.0, 50.0], [-ln2, ln2, 0.0]]
    out = policy_loss(from_ratios(**TWO_SEQ, ref_shift=shift), variant="dapo", clip_low=0.2, clip_high=0.2, kl_coef=0.5)
    kl_sum = 2 * (1 - ln2) + (ln2 - 0.5)
    assert out.metrics["kl"] == pytest.approx(kl_sum / 5, abs=1e-12)
    assert out.metrics["kl"] > 0
    assert out.loss.item() == pytest.approx(0.86 + 0.5 * kl_sum / 5, abs=1e-12)
    assert out.metrics["pg_loss"] == pytest.approx(0.86, abs=1e-12)

    # A reference with kl_coef 0 reports kl but leaves the loss alone.
    report_only = policy_loss(from_ratios(**TWO_SEQ, ref_shift=shift), variant="dapo", clip_low=0.2, clip_high=0.2)
    assert report_only.metrics["kl"] > 0 and report_only.loss.item() == pytest.approx(0.86, abs=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_masked_tokens_contribute_nothing(variant):
    g = torch.Generator().manual_seed(2)
    old = -torch.rand(3, 6, generator=g, dtype=F64)
    logp = old + 0.5 * torch.randn(3, 6, generator=g, dtype=F64)
    ref = old + 0.5 * torch.randn(3, 6, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    kw = dict(variant=variant, clip_low=0.2, clip_high=0.28, kl_coef=0.1, max_len=6)

    def run(lp, old_, ref_, mask_):
        leaf = lp.clone().requires_grad_()
        out = policy_loss(PolicyLossInput(leaf, old_, adv, mask_, ref_), **kw)
        out.loss.backward()
        return out, leaf.grad

    clean, clean_grad = run(logp, old, ref, mask)
    # Garbage, even non-finite, off the mask in every log-prob tensor.
    junk = torch.tensor([math.inf, -math.inf, math.nan, 1e4, -1e4, 7.0], dtype=F64).expand(3, 6)
    dirty, dirty_grad = run(torch.where(mask, logp, junk), torch.where(mask, old, junk.flip(1)), torch.where(mask, ref, junk), mask)
    assert dirty.loss.item() == pytest.approx(clean.loss.item(), abs=1e-12)
    assert dirty.metrics == pytest.approx(clean.metrics)
    torch.testing.assert_close(dirty_grad, clean_grad, rtol=0, atol=1e-12)
    assert torch.equal(dirty_grad[~mask], torch.zeros(int((~mask).sum()), dtype=F64))

    # Extra padding columns change nothing either.
    pad = lambda x, v: torch.cat([x, torch.full((3, 4), v, dtype=x.dtype)], dim=1)  # noqa: E731
    padded, padded_grad = run(pad(logp, 0.0), pad(old, -5.0), pad(ref, 3.0), pad(mask, False))
    assert padded.loss.item() == pytest.approx(clean.loss.item(), abs=1e-12)
    torch.testing.assert_close(padded_grad[:, :6], clean_grad, rtol=0, atol=1e-12)


def test_shape_errors_name_the_field():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(2, 4\); expected \(2, 3\)"):
        PolicyLossInput(z, torch.zeros(2, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\)"):
        PolicyLossInput(z, z, torch.zeros(2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"ref_logprobs has shape \(2,\)"):
        PolicyLossInput(z, z, torch.zeros(2), z, torch.zeros(2))
    with pytest.raises(ValueError, match=r"advantages has shape \(2, 1\); expected \(2,\)"):
        PolicyLossInput(z, z, torch.zeros(2, 1), z)
    with pytest.raises(ValueError, match=r"logprobs must be \[N, T\], got shape \(3,\)"):
        PolicyLossInput(torch.zeros(3), z, torch.zeros(2), z)


def test_argument_errors():
    inp = from_ratios(**TWO_SEQ)
    kw = dict(clip_low=0.2, clip_high=0.2)
    with pytest.raises(ValueError, match=r"unknown loss variant 'ppo'; known: \['dapo', 'dr_grpo', 'grpo'\]"):
        policy_loss(inp, variant="ppo", **kw)
    with pytest.raises(ValueError, match="'dr_grpo' needs max_len"):
        policy_loss(inp, variant="dr_grpo", **kw)
    with pytest.raises(ValueError, match="kl_coef = 0.1 > 0 needs ref_logprobs"):
        policy_loss(inp, variant="grpo", kl_coef=0.1, **kw)
    with pytest.raises(ValueError, match="total_sequences = 1 is smaller than this input's own count, 2"):
        policy_loss(inp, variant="grpo", total_sequences=1, **kw)
    with pytest.raises(ValueError, match="total_tokens = 4 is smaller than this input's own count, 5"):
        policy_loss(inp, variant="dapo", total_tokens=4, **kw)
    with pytest.raises(ValueError, match="clip_low"):
        policy_loss(inp, variant="grpo", clip_low=-0.1, clip_high=0.2)
    assert set(VARIANTS) <= set(LOSS_AGGREGATIONS)


def test_sequence_and_token_weights_scale_each_tokens_term():
    torch.manual_seed(0)
    logp = torch.randn(3, 4, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(3, 4)
    adv, mask = torch.tensor([1.0, -0.5, 2.0]), torch.ones(3, 4)
    sw, tw = torch.tensor([0.5, 1.0, 0.25]), torch.rand(3, 4) + 0.5
    base = policy_loss(PolicyLossInput(logp, old, adv, mask), variant="dapo", clip_low=0.2, clip_high=0.2)
    weighted = policy_loss(PolicyLossInput(logp, old, adv, mask, sequence_weights=sw, token_weights=tw),
                           variant="dapo", clip_low=0.2, clip_high=0.2)
    ratio = (logp.detach() - old).exp()
    term = torch.maximum(-ratio * adv[:, None], -ratio.clamp(0.8, 1.2) * adv[:, None])
    assert base.loss.item() == pytest.approx(float(term.mean()), rel=1e-6)
    assert weighted.loss.item() == pytest.approx(float((term * tw * sw[:, None]).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="sequence_weights has shape"):
        PolicyLossInput(logp, old, adv, mask, sequence_weights=torch.ones(2))


def test_tis_weights_are_the_capped_ratio_to_the_rollout_engine():
    from rlpp.algo.loss import tis_weights

    old = torch.log(torch.tensor([[0.5, 0.4, 0.9], [0.2, 0.3, 0.1]]))
    rollout = torch.log(torch.tensor([[0.5, 0.1, 0.3], [0.4, 0.3, 0.5]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w, stats = tis_weights(old, rollout, mask, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, 2.0], [0.5, 1.0, 0.0]]), rtol=1e-6, atol=1e-6)
    assert stats["tis_capped_frac"] == pytest.approx(2 / 5) and stats["tis_mean"] == pytest.approx(6.5 / 5)
