"""sae_ext.integrations.trl against framework_loops.trl_loop, the semantics of TRL's PPO advantage
step (GAE over the whole length, whitening over the response tokens, padding zeroed), on
batches laid out as TRL lays them out. TRL itself is not needed."""
import pytest
import torch

from _integrations_common import ATOL
from sae_ext import reference
from sae_ext.testing import framework_loops as loops
from sae_ext.integrations import trl as sae_trl

INVALID_LOGPROB = 1.0  # what TRL writes into padding log-probs
F64 = torch.float64


def trl_batch(B=8, T=48, seed=0, kl_coef=0.05):
    """A batch in TRL's layout: last response token L per row (rows that fill the whole
    length, end at T - 2, or are empty: L = -1, as TRL computes it for a response starting
    with padding), padding masks, values zeroed after L + 1, k1 KL penalty that
    is 0 on padding, the score on L + 1 when it fits (else on L)."""
    g = torch.Generator().manual_seed(seed)
    last = torch.randint(0, T, (B,), generator=g)
    last[0], last[1], last[2] = T - 1, T - 2, -1  # full, nearly full, empty response
    idx = torch.arange(T).expand(B, T)
    padding_mask = idx > last[:, None]
    padding_mask_p1 = idx > (last + 1)[:, None]
    values = torch.randn(B, T, generator=g).masked_fill(padding_mask_p1, 0.0)
    probs = torch.where(torch.rand(B, T, generator=g) < 0.15,
                        0.01 + 0.18 * torch.rand(B, T, generator=g),
                        0.21 + 0.79 * torch.rand(B, T, generator=g))
    logprobs = probs.log().masked_fill(padding_mask, INVALID_LOGPROB)
    ref_logprobs = (logprobs + 0.1 * torch.randn(B, T, generator=g)).masked_fill(
        padding_mask, INVALID_LOGPROB)
    rewards = -kl_coef * (logprobs - ref_logprobs)
    scores = torch.randint(0, 2, (B,), generator=g).float()
    end = torch.where(last + 1 < T, last + 1, last)
    rewards[torch.arange(B), end] += scores
    return rewards, values, logprobs, padding_mask, padding_mask_p1


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
def test_gae_equals_trl_everywhere(gamma, lam):
    r, v, _, pm, pm1 = trl_batch(seed=1)
    adv, ret = sae_trl.compute_advantages_and_returns(r, v, pm, pm1, gamma, lam)
    ref_adv, ref_ret = loops.trl_loop(r, v, pm, gamma, lam, dtype=F64)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    # returns are nonzero at L + 1 (the value loss uses that position) and 0 after it
    assert (ret[pm1] == 0).all()


def test_gae_without_whitening():
    r, v, _, pm, pm1 = trl_batch(seed=2)
    adv, ret = sae_trl.compute_advantages_and_returns(r, v, pm, pm1, 1.0, 0.95,
                                                      whiten_advantages=False)
    ref_adv, ref_ret = loops.trl_loop(r, v, pm, 1.0, 0.95, whiten=False, dtype=F64)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_mask_dtypes():
    r, v, _, pm, pm1 = trl_batch(seed=3)
    a1, r1 = sae_trl.compute_advantages_and_returns(r, v, pm, pm1, 1.0, 0.95)
    a2, r2 = sae_trl.compute_advantages_and_returns(r, v, pm.long(), pm1.float(), 1.0, 0.95)
    assert torch.equal(a1, a2) and torch.equal(r1, r2)


@pytest.mark.parametrize("gamma,lam,inner,p", [(1.0, 0.5, 1.0, 0.2), (0.99, 0.8, 0.97, 0.3)])
def test_sae_equals_trl_chain_with_segment_lambdas(gamma, lam, inner, p):
    r, v, lp, pm, pm1 = trl_batch(seed=4)
    adv, ret = sae_trl.compute_sae_advantages_and_returns(
        r, v, lp, pm, pm1, gamma, lam, threshold=p, lam_inner=inner)
    starts = reference.segment_boundaries(lp, ~pm, p)
    ref_adv, ref_ret = loops.trl_loop(r, v, pm, gamma, lam, boundaries=starts, lam_inner=inner,
                                        dtype=F64)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    # and the contract's recursion over the positions up to L + 1 gives the raw numbers
    raw, _ = sae_trl.compute_sae_advantages_and_returns(
        r, v, lp, pm, pm1, gamma, lam, threshold=p, lam_inner=inner, whiten_advantages=False)
    c_adv, c_ret = reference.advantages_from_boundaries(r, v, starts, ~pm1, gamma, lam, inner)
    torch.testing.assert_close(raw.double(), c_adv.masked_fill(pm, 0.0), atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), c_ret, atol=ATOL, rtol=0)


def test_sae_position_after_last_token_never_starts_a_segment():
    r, v, lp, pm, pm1 = trl_batch(seed=5)
    after_last = pm & ~pm1
    lp_low = lp.masked_fill(after_last, -30.0)
    a1, r1 = sae_trl.compute_sae_advantages_and_returns(r, v, lp, pm, pm1, 1.0, 0.5)
    a2, r2 = sae_trl.compute_sae_advantages_and_returns(r, v, lp_low, pm, pm1, 1.0, 0.5)
    assert torch.equal(a1, a2) and torch.equal(r1, r2)


def test_sae_with_equal_lambdas_is_gae():
    r, v, lp, pm, pm1 = trl_batch(seed=6)
    a1, r1 = sae_trl.compute_sae_advantages_and_returns(r, v, lp, pm, pm1, 0.99, 0.9,
                                                        lam_inner=0.9)
    a2, r2 = sae_trl.compute_advantages_and_returns(r, v, pm, pm1, 0.99, 0.9)
    torch.testing.assert_close(a1, a2, atol=ATOL, rtol=0)
    torch.testing.assert_close(r1, r2, atol=ATOL, rtol=0)
