"""The CPU op against the contract: its worked example verbatim, the float64 reference on
many shapes, masks, dtypes and strides, the threshold's edge cases, and determinism."""
from __future__ import annotations

import math

import pytest
import torch

import sae_ext
from sae_ext import reference

from conftest import check_against_reference, make_rollout

OPS = torch.ops.sae

# The contract's worked example: B = 1, T = 8, gamma = 1, lam = 0.5, lam_inner = 1, p = 0.2.
EX_PROB = [0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0]
EX_VALUE = [0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0, 0]
EX_REWARD = [0, 0, 0, 0, 0, 1, 0, 0]
EX_MASK = [1, 1, 1, 1, 1, 1, 0, 0]
EX_BOUNDARY = [False, True, False, False, True, False, False, False]
EX_ADV_SAE = [0.025, 0.25, 0.05, 0.05, 0.7, 0.3, 0, 0]
EX_RET_SAE = [0.525, 0.65, 0.65, 0.65, 1.0, 1.0, 0, 0]
EX_ADV_GAE = [-0.003125, 0.19375, -0.0125, -0.025, 0.55, 0.3, 0, 0]


def worked_example(dtype=torch.float32):
    t = lambda x: torch.tensor([x], dtype=dtype)  # noqa: E731
    return t(EX_REWARD), t(EX_VALUE), t(EX_PROB).log(), torch.tensor([EX_MASK])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", ["op", "wrapper", "reference", "emulated_warp"])
def test_worked_example(impl, dtype):
    r, v, lp, m = worked_example(dtype)
    if impl == "op":
        sae = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2)
        gae = OPS.advantages(r, v, lp, m, 1.0, 0.5, 0.5, 0.2)
    elif impl == "wrapper":
        sae = sae_ext.advantages(r, v, lp, m, lam=0.5)
        gae = sae_ext.gae(r, v, m, lam=0.5)
    elif impl == "reference":
        sae = reference.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2)
        gae = reference.advantages(r, v, lp, m, 1.0, 0.5, 0.5, 0.2)
    else:
        sae = OPS._warp_emulated_advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2)
        gae = OPS._warp_emulated_advantages(r, v, lp, m, 1.0, 0.5, 0.5, 0.2)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(sae[0][0].double(), torch.tensor(EX_ADV_SAE, dtype=torch.float64), atol=tol, rtol=0)
    torch.testing.assert_close(sae[1][0].double(), torch.tensor(EX_RET_SAE, dtype=torch.float64), atol=tol, rtol=0)
    torch.testing.assert_close(gae[0][0].double(), torch.tensor(EX_ADV_GAE, dtype=torch.float64), atol=tol, rtol=0)
    assert OPS.segment_boundaries(lp, m, 0.2)[0].tolist() == EX_BOUNDARY


SHAPES = [(1, 1), (3, 5), (7, 31), (8, 32), (9, 33), (4, 257), (16, 1000), (2, 5000)]


@pytest.mark.parametrize("B,T", SHAPES)
@pytest.mark.parametrize("hyper", [(1.0, 0.5, 1.0, 0.2), (0.99, 0.9, 0.95, 0.3), (1.0, 0.95, 0.95, 0.2),
                                   (0.5, 0.0, 1.0, 1.0), (1.0, 1.0, 0.0, 0.0)])
def test_matches_reference(B, T, hyper):
    r, v, lp, m, bs = make_rollout(B, T, seed=B * 1000 + T, reward_kind="dense")
    for bootstrap in (None, bs):
        out = OPS.advantages(r, v, lp, m, *hyper, bootstrap)
        check_against_reference(out, (r, v, lp, m, *hyper, bootstrap), what=f"{B}x{T} {hyper}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                                        torch.int64, torch.float16, torch.bfloat16, torch.float32,
                                        torch.float64])
def test_dtypes(dtype, mask_dtype):
    r, v, lp, m, bs = make_rollout(6, 300, dtype=dtype, mask_dtype=mask_dtype, seed=3, reward_kind="dense")
    adv, ret = OPS.advantages(r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs)
    assert adv.dtype == ret.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    check_against_reference((adv, ret), (r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs), what=str(dtype))


def test_mixed_dtypes_promote_to_float64_only_when_a_float_input_is_float64():
    r, v, lp, m, bs = make_rollout(4, 50, seed=5, reward_kind="dense")
    assert OPS.advantages(r.bfloat16(), v.half(), lp, m, 1.0, 0.5, 1.0, 0.2, bs)[0].dtype == torch.float32
    for args in [(r.double(), v, lp, bs), (r, v.double(), lp, bs), (r, v, lp.double(), bs), (r, v, lp, bs.double())]:
        out = OPS.advantages(args[0], args[1], args[2], m, 1.0, 0.5, 1.0, 0.2, args[3])
        assert out[0].dtype == torch.float64
        check_against_reference(out, (args[0], args[1], args[2], m, 1.0, 0.5, 1.0, 0.2, args[3]))


def _noncontiguous(t, how):
    if how == "transposed":
        return t.t().contiguous().t()
    if how == "sliced":
        wide = torch.zeros(t.shape[0] * 2, t.shape[1] * 3, dtype=t.dtype)
        wide[::2, 1::3] = t
        return wide[::2, 1::3]
    raise ValueError(how)


@pytest.mark.parametrize("how", ["transposed", "sliced"])
def test_noncontiguous_inputs_match_contiguous(how):
    r, v, lp, m, bs = make_rollout(9, 77, seed=11, reward_kind="dense")
    want = OPS.advantages(r, v, lp, m, 0.99, 0.7, 1.0, 0.2, bs)
    nc = [_noncontiguous(t, how) for t in (r, v, lp, m)]
    assert not any(t.is_contiguous() for t in nc)
    got = OPS.advantages(*nc, 0.99, 0.7, 1.0, 0.2, bs[::1])
    for g, w in zip(got, want):
        assert g.is_contiguous()
        assert torch.equal(g, w)
    # A broadcast (stride-0) row of values and a strided bootstrap.
    v0 = v[:1].expand_as(v)
    bs_strided = torch.stack([bs, bs], 1)[:, 0]
    got = OPS.advantages(r, v0, lp, m, 0.99, 0.7, 1.0, 0.2, bs_strided)
    torch.testing.assert_close(got, OPS.advantages(r, v0.contiguous(), lp, m, 0.99, 0.7, 1.0, 0.2, bs))


def test_outputs_zero_at_masked_and_contiguous():
    r, v, lp, m, bs = make_rollout(8, 200, seed=2, reward_kind="dense")
    adv, ret = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    assert adv.is_contiguous() and ret.is_contiguous()
    assert (adv[~m] == 0).all() and (ret[~m] == 0).all()


def test_single_valid_token_gets_reward_plus_bootstrap_minus_value():
    r = torch.tensor([[0.0, 2.0, 0.0]])
    v = torch.tensor([[5.0, 0.25, 7.0]])
    m = torch.tensor([[False, True, False]])
    adv, ret = OPS.advantages(r, v, torch.zeros(1, 3), m, 0.9, 0.5, 1.0, 0.2, torch.tensor([3.0]))
    torch.testing.assert_close(adv, torch.tensor([[0.0, 2.0 + 0.9 * 3.0 - 0.25, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 2.0 + 0.9 * 3.0, 0.0]]))


@pytest.mark.parametrize("p", [0.2, 0.05, 0.5, 1e-30, 0.7])
def test_threshold_is_exact_at_float32_neighbours_of_log_p(p):
    """A float32 log-prob is a boundary iff it is < log(p) computed in float64."""
    log_p = math.log(p)
    f = torch.tensor([log_p], dtype=torch.float32)
    candidates = torch.cat([torch.nextafter(f, torch.tensor([-math.inf])), f,
                            torch.nextafter(f, torch.tensor([math.inf]))])
    m = torch.ones(1, 3, dtype=torch.bool)
    for dtype in (torch.float32, torch.float64):
        lp = candidates.to(dtype)[None]
        got = OPS.segment_boundaries(lp, m, p)[0].tolist()
        want = [x < log_p for x in lp[0].double().tolist()]
        assert got == want, (dtype, lp, got, want)


def test_threshold_endpoints_and_nan():
    lp = torch.tensor([[-1e30, -1.0, -1e-7, 0.0, math.nan, -math.inf]])
    m = torch.ones_like(lp, dtype=torch.bool)
    assert not OPS.segment_boundaries(lp, m, 0.0).any()  # p = 0: no boundaries
    assert OPS.segment_boundaries(lp, m, 1.0)[0].tolist() == [True, True, True, False, False, True]
    m[0, 0] = False  # masked tokens are never boundaries
    assert not OPS.segment_boundaries(lp, m, 1.0)[0, 0]


def test_boundaries_op_equals_logprob_op():
    r, v, lp, m, bs = make_rollout(5, 400, seed=4, reward_kind="dense")
    b = OPS.segment_boundaries(lp, m, 0.3)
    torch.testing.assert_close(OPS.advantages_from_boundaries(r, v, b, m, 0.97, 0.4, 1.0, bs),
                               OPS.advantages(r, v, lp, m, 0.97, 0.4, 1.0, 0.3, bs), rtol=0, atol=0)


def test_bitwise_identical_whatever_the_thread_count():
    r, v, lp, m, bs = make_rollout(61, 3001, seed=8, reward_kind="dense")  # 61: not a multiple of 8
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
        one_bw = OPS.advantages_backward(r, v, m, lp, None, 0.99, 0.5, 1.0, 0.2)
        torch.set_num_threads(max(2, before))
        many = OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
        many_bw = OPS.advantages_backward(r, v, m, lp, None, 0.99, 0.5, 1.0, 0.2)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one + one_bw, many + many_bw):
        assert torch.equal(a, b)
    # A row computes the same bits alone as inside a batch.
    for row in (0, 7, 8, 60):
        alone = OPS.advantages(r[row:row + 1], v[row:row + 1], lp[row:row + 1], m[row:row + 1],
                               0.99, 0.5, 1.0, 0.2, bs[row:row + 1])
        assert torch.equal(alone[0][0], one[0][row])


def test_masking_a_token_equals_deleting_it():
    r, v, lp, m, bs = make_rollout(1, 300, seed=9, mask_kind="random", reward_kind="dense")
    adv, ret = OPS.advantages(r, v, lp, m, 0.95, 0.5, 1.0, 0.2, bs)
    keep = m[0]
    adv_c, ret_c = OPS.advantages(r[:, keep], v[:, keep], lp[:, keep], torch.ones(1, int(keep.sum()), dtype=torch.bool),
                                  0.95, 0.5, 1.0, 0.2, bs)
    torch.testing.assert_close(adv[0, keep], adv_c[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ret[0, keep], ret_c[0], rtol=0, atol=1e-6)
