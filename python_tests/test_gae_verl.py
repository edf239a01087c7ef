"""sae_ext.gae (and torch.ops.sae.advantages with lam_inner == lam) against a verl-style GAE
loop, on valid tokens: trailing padding, holes in the middle (multi-turn observation tokens),
all-masked rows, gamma < 1, float32 and float64, float and bool masks.
"""
from __future__ import annotations

import math
import zlib

import pytest
import torch

import sae_ext
from sae_ext.testing import framework_loops as loops

ops = torch.ops.sae


def verl_gae(rewards, values, mask, gamma, lam, bootstrap=None):
    """verl's multi-turn GAE loop (masked tokens pass the carried value and advantage
    through) in float64; compare on valid tokens."""
    return loops.verl_loop(rewards, values, mask, gamma, lam, bootstrap=bootstrap,
                           dtype=torch.float64)


def _mask(kind: str, B: int, T: int, g: torch.Generator) -> torch.Tensor:
    """bool [B, T] validity patterns."""
    if kind == "full":
        return torch.ones(B, T, dtype=torch.bool)
    if kind == "trailing":  # right padding with varying response lengths, one empty row
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        lengths[-1] = 0
        return torch.arange(T)[None, :] < lengths[:, None]
    if kind == "holes":  # multi-turn: action spans separated by observation spans, then padding
        m = torch.zeros(B, T, dtype=torch.bool)
        for b in range(B):
            t = 0
            end = int(torch.randint(T // 2, T + 1, (1,), generator=g))
            while t < end:
                span = int(torch.randint(1, 8, (1,), generator=g))
                m[b, t:min(t + span, end)] = True
                t += span + int(torch.randint(1, 6, (1,), generator=g))  # observation tokens
        return m
    if kind == "random":
        return torch.rand(B, T, generator=g) < 0.6
    if kind == "all_masked_rows":
        m = torch.rand(B, T, generator=g) < 0.7
        m[1] = False
        m[3] = False
        return m
    if kind == "none":
        return torch.zeros(B, T, dtype=torch.bool)
    raise ValueError(kind)


def _data(B, T, dtype, mask_kind, mask_dtype, seed):
    g = torch.Generator().manual_seed(seed)
    valid = _mask(mask_kind, B, T, g)
    rewards = torch.zeros(B, T, dtype=torch.float64)
    # RLVR-style: the verifiable reward on each row's last valid token, plus a little shaping
    for b in range(B):
        idx = valid[b].nonzero().flatten()
        if idx.numel():
            rewards[b, idx[-1]] = float(torch.randint(0, 2, (1,), generator=g))
    rewards += 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.rand(B, T, generator=g, dtype=torch.float64)
    logprobs = torch.rand(B, T, generator=g, dtype=torch.float64).log()
    mask = valid if mask_dtype == torch.bool else valid.to(mask_dtype)
    return rewards.to(dtype), values.to(dtype), logprobs.to(dtype), mask, valid


def _check_against_verl(out, ref, valid, dtype, T):
    adv, ret = out
    ra, rr = ref
    assert adv.dtype == dtype and ret.dtype == dtype
    assert bool((adv[~valid] == 0).all()) and bool((ret[~valid] == 0).all())
    atol = (1e-12 if dtype == torch.float64 else 2e-5) * (T + 1) ** 0.5
    torch.testing.assert_close(adv.double()[valid], ra[valid], rtol=1e-6 if dtype ==
                               torch.float32 else 1e-12, atol=atol)
    torch.testing.assert_close(ret.double()[valid], rr[valid], rtol=1e-6 if dtype ==
                               torch.float32 else 1e-12, atol=atol)


MASK_KINDS = ["full", "trailing", "holes", "random", "all_masked_rows", "none"]


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32], ids=["boolmask", "floatmask"])
@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.99, 0.95), (0.9, 1.0), (0.8, 0.0),
                                        (1.0, 1.0), (0.0, 0.5)])
@pytest.mark.parametrize("with_bootstrap", [False, True], ids=["terminal", "bootstrap"])
def test_gae_matches_verl_loop(mask_kind, dtype, mask_dtype, gamma, lam, with_bootstrap):
    B, T = 6, 48
    seed = zlib.crc32(repr((mask_kind, str(dtype), gamma, lam)).encode())  # stable
    r, v, lp, mask, valid = _data(B, T, dtype, mask_kind, mask_dtype, seed)
    bs = torch.rand(B, generator=torch.Generator().manual_seed(seed + 1),
                    dtype=torch.float64).to(dtype) if with_bootstrap else None
    ref = verl_gae(r, v, mask, gamma, lam, bs)
    _check_against_verl(sae_ext.gae(r, v, mask, gamma=gamma, lam=lam, bootstrap=bs), ref, valid,
                        dtype, T)
    # the op itself with lam_inner == lam: the log-probs (and threshold) do not matter
    for threshold in (0.0, 0.2, 1.0):
        out = ops.advantages(r, v, lp, mask, gamma, lam, lam, threshold, bs)
        _check_against_verl(out, ref, valid, dtype, T)


def test_all_masked_rows_are_zero():
    r, v, lp, mask, valid = _data(6, 30, torch.float32, "all_masked_rows", torch.float32, 3)
    adv, ret = sae_ext.gae(r, v, mask, gamma=0.99, lam=0.95, bootstrap=torch.ones(6))
    for b in (1, 3):
        assert not bool(valid[b].any())
        assert bool((adv[b] == 0).all()) and bool((ret[b] == 0).all())


def test_non_contiguous_inputs():
    r, v, lp, mask, valid = _data(5, 40, torch.float64, "holes", torch.float32, 11)
    ref = verl_gae(r, v, mask, 0.97, 0.9)
    rt, vt, mt = (x.t().contiguous().t() for x in (r, v, mask))
    assert not rt.is_contiguous()
    _check_against_verl(sae_ext.gae(rt, vt, mt, gamma=0.97, lam=0.9), ref, valid,
                        torch.float64, 40)


def test_verl_loop_on_contract_example():
    """The verl loop itself reproduces the contract's worked GAE row (so it is a fair oracle)."""
    probs = torch.tensor([[0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0, 0]], dtype=torch.float64)
    r = torch.tensor([[0, 0, 0, 0, 0, 1.0, 0, 0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.float64)
    gae_row = torch.tensor([[-0.003125, 0.19375, -0.0125, -0.025, 0.55, 0.3, 0, 0]],
                           dtype=torch.float64)
    sae_row = torch.tensor([[0.025, 0.25, 0.05, 0.05, 0.7, 0.3, 0, 0]], dtype=torch.float64)
    sae_ret = torch.tensor([[0.525, 0.65, 0.65, 0.65, 1.0, 1.0, 0, 0]], dtype=torch.float64)
    valid = mask != 0
    ra, _ = verl_gae(r, v, mask, 1.0, 0.5)
    torch.testing.assert_close(ra[valid], gae_row[valid], rtol=0, atol=1e-15)
    adv, _ = sae_ext.gae(r, v, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, gae_row, rtol=0, atol=1e-15)
    adv, ret = sae_ext.advantages(r, v, probs.log(), mask, lam=0.5, lam_inner=1.0, threshold=0.2)
    torch.testing.assert_close(adv, sae_row, rtol=0, atol=1e-15)
    torch.testing.assert_close(ret, sae_ret, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sae_differs_from_gae_when_boundaries_exist(dtype):
    """Sanity check that the comparison above can fail: SAE (lam_inner = 1) is not GAE."""
    r, v, lp, mask, valid = _data(6, 48, dtype, "holes", torch.bool, 5)
    b = sae_ext.segment_boundaries(lp, mask, threshold=0.2)
    assert bool(b.any()) and not bool(b.all())
    gae_ref = verl_gae(r, v, mask, 1.0, 0.95)
    sae = sae_ext.advantages(r, v, lp, mask, lam=0.95, lam_inner=1.0, threshold=0.2)
    diff = (sae[0].double() - gae_ref[0]).abs()[valid]
    assert float(diff.max()) > 1e-2
    with pytest.raises(AssertionError):
        _check_against_verl(sae, gae_ref, valid, dtype, 48)
    # ...while without boundaries (p = 0) lam_inner = 1 is GAE with lam = 1
    sae0 = sae_ext.advantages(r, v, lp, mask, lam=0.95, lam_inner=1.0, threshold=0.0)
    _check_against_verl(sae0, verl_gae(r, v, mask, 1.0, 1.0), valid, dtype, 48)


def test_gae_worked_example_float32_bool_mask_trailing_padding():
    """A hand-checkable case: gamma = 0.5, lam = 0.5, one row padded, one with a hole."""
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 5.0, 0.0, 1.0]])
    v = torch.tensor([[1.0, 2.0, 4.0, 9.0], [2.0, 9.0, 4.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    adv, ret = sae_ext.gae(r, v, mask, gamma=0.5, lam=0.5)
    # row 0: A2 = 1 - 4 = -3; A1 = 0.5*4 - 2 + 0.25*(-3) = -0.75; A0 = 0.5*2 - 1 + 0.25*(-0.75)
    # row 1: A3 = 1 - 0 = 1; A2 = 0.5*0 - 4 + 0.25*1 = -3.75; (t=1 masked)
    #        A0 = 0.5*4 - 2 + 0.25*(-3.75) = -0.9375
    expect = torch.tensor([[-0.1875, -0.75, -3.0, 0.0], [-0.9375, 0.0, -3.75, 1.0]])
    torch.testing.assert_close(adv, expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(ret, torch.where(mask, expect + v, 0.0), rtol=0, atol=1e-6)
    ra, _ = verl_gae(r, v, mask, 0.5, 0.5)
    torch.testing.assert_close(ra[mask], expect.double()[mask], rtol=0, atol=1e-12)
    assert math.isclose(float(adv[0, 0]), -0.1875)
