"""sae_ext.integrations.openrlhf against OpenRLHF's semantics (framework_loops.openrlhf_loop:
values and rewards multiplied by the action mask, then GAE over every position) and against
the contract (sae_ext.reference). OpenRLHF itself is not needed."""
import pytest
import torch

from _integrations_common import ATOL, random_batch
from sae_ext import reference
from sae_ext.testing import framework_loops as loops
from sae_ext.integrations import openrlhf as orl

F64 = torch.float64


@pytest.mark.parametrize("gamma,lambd", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
@pytest.mark.parametrize("holes", ["skip", "openrlhf"])
def test_gae_equals_openrlhf_without_holes(gamma, lambd, holes):
    r, v, _, m = random_batch(seed=1)
    adv, ret = orl.get_advantages_and_returns(v, r, m.bool(), gamma, lambd, holes=holes)
    ref_adv, ref_ret = loops.openrlhf_loop(r, v, m, gamma, lambd, dtype=F64)
    # Trailing padding only: equal at every position, padding included.
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    assert adv.dtype == torch.float32


@pytest.mark.parametrize("gamma,lambd", [(1.0, 0.95), (0.99, 0.9)])
def test_gae_holes_openrlhf_mode_reproduces_openrlhf_everywhere(gamma, lambd):
    r, v, _, m = random_batch(seed=2, holes=True)
    assert ((m[:, :-1] == 0) & (m[:, 1:] != 0)).any(), "test data must have holes"
    adv, ret = orl.get_advantages_and_returns(v, r, m.bool(), gamma, lambd, holes="openrlhf")
    ref_adv, ref_ret = loops.openrlhf_loop(r, v, m, gamma, lambd, dtype=F64)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_gae_holes_skip_mode_follows_the_contract():
    gamma, lambd = 0.99, 0.9
    r, v, lp, m = random_batch(seed=3, holes=True)
    adv, ret = orl.get_advantages_and_returns(v, r, m.bool(), gamma, lambd)
    ref_adv, ref_ret = reference.advantages(r, v, lp, m, gamma, lambd, lambd, 0.0)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    # ... which is not OpenRLHF's chain on rows with holes (the documented difference).
    orl_adv, _ = loops.openrlhf_loop(r, v, m, gamma, lambd, dtype=F64)
    valid = m.bool()
    assert (adv.double() - orl_adv)[valid].abs().max() > 1e-3


def test_gae_holes_skip_equals_openrlhf_on_valid_tokens_when_undiscounted():
    # With gamma = lambda = 1 a zero-valued step in the chain changes nothing downstream.
    r, v, _, m = random_batch(seed=4, holes=True)
    adv, ret = orl.get_advantages_and_returns(v, r, m.bool(), 1.0, 1.0)
    ref_adv, ref_ret = loops.openrlhf_loop(r, v, m, 1.0, 1.0, dtype=F64)
    valid = m.bool()
    torch.testing.assert_close(adv.double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double()[valid], ref_ret[valid], atol=ATOL, rtol=0)
    assert (adv[~valid] == 0).all() and (ret[~valid] == 0).all()


def test_gae_mask_none_and_mask_dtypes():
    r, v, _, m = random_batch(seed=5, empty_row=False)
    full, full_ret = orl.get_advantages_and_returns(v, r, None, 1.0, 0.95)
    ref_adv, ref_ret = loops.openrlhf_loop(r, v, None, 1.0, 0.95, dtype=F64)
    torch.testing.assert_close(full.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(full_ret.double(), ref_ret, atol=ATOL, rtol=0)
    outs = [orl.get_advantages_and_returns(v, r, mm, 1.0, 0.95)
            for mm in (m.bool(), m.long(), m, m.to(torch.uint8))]
    for adv, ret in outs[1:]:
        assert torch.equal(adv, outs[0][0]) and torch.equal(ret, outs[0][1])


def test_gae_bfloat16_values():
    r, v, _, m = random_batch(seed=6)
    v16 = v.bfloat16()
    adv, ret = orl.get_advantages_and_returns(v16, r, m.bool(), 1.0, 0.95)
    ref_adv, ref_ret = loops.openrlhf_loop(r, v16.float(), m, 1.0, 0.95, dtype=F64)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_bad_holes_argument():
    r, v, _, m = random_batch(seed=0, B=2, T=5)
    with pytest.raises(ValueError, match="holes"):
        orl.get_advantages_and_returns(v, r, m, 1.0, 0.95, holes="zero")


@pytest.mark.parametrize("gamma,lambd,inner", [(1.0, 0.5, 1.0), (0.99, 0.8, 0.97)])
def test_sae_without_holes(gamma, lambd, inner):
    r, v, lp, m = random_batch(seed=7)
    adv, ret = orl.get_sae_advantages_and_returns(v, r, m.bool(), lp, gamma, lambd,
                                                  lambd_inner=inner)
    ref_adv, ref_ret = reference.advantages(r, v, lp, m, gamma, lambd, inner, 0.2)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    # Same numbers on OpenRLHF's chain: trailing padding changes nothing.
    orl_adv, orl_ret = loops.openrlhf_loop(r, v, m, gamma, lambd, lam_inner=inner, dtype=F64,
                                           boundaries=reference.segment_boundaries(lp, m, 0.2))
    torch.testing.assert_close(adv.double(), orl_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), orl_ret, atol=ATOL, rtol=0)


def test_sae_with_holes_both_modes():
    gamma, lambd, inner, p = 0.99, 0.6, 1.0, 0.3
    r, v, lp, m = random_batch(seed=8, holes=True)
    # Low log-probs on masked positions (OpenRLHF stores dummies there) must not cut.
    lp = torch.where(m.bool(), lp, torch.full_like(lp, -20.0))
    adv, ret = orl.get_sae_advantages_and_returns(v, r, m.bool(), lp, gamma, lambd,
                                                  threshold=p, lambd_inner=inner)
    ref_adv, ref_ret = reference.advantages(r, v, lp, m, gamma, lambd, inner, p)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    adv, ret = orl.get_sae_advantages_and_returns(v, r, m.bool(), lp, gamma, lambd,
                                                  threshold=p, lambd_inner=inner, holes="openrlhf")
    ref_adv, ref_ret = loops.openrlhf_loop(r, v, m, gamma, lambd, lam_inner=inner, dtype=F64,
                                           boundaries=reference.segment_boundaries(lp, m, p))
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_sae_with_equal_lambdas_is_gae():
    r, v, lp, m = random_batch(seed=9, holes=True)
    for holes in ("skip", "openrlhf"):
        a1, r1 = orl.get_sae_advantages_and_returns(v, r, m.bool(), lp, 0.99, 0.9,
                                                    lambd_inner=0.9, holes=holes)
        a2, r2 = orl.get_advantages_and_returns(v, r, m.bool(), 0.99, 0.9, holes=holes)
        torch.testing.assert_close(a1, a2, atol=ATOL, rtol=0)
        torch.testing.assert_close(r1, r2, atol=ATOL, rtol=0)


def test_sae_contract_worked_example():
    probs = torch.tensor([[0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0.0, 0.0]])
    rewards = torch.tensor([[0, 0, 0, 0, 0, 1.0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    adv, ret = orl.get_sae_advantages_and_returns(values, rewards, mask, probs.log(), 1.0, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.025, 0.25, 0.05, 0.05, 0.7, 0.3, 0, 0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.525, 0.65, 0.65, 0.65, 1.0, 1.0, 0, 0]]))
