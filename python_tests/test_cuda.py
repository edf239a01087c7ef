"""The CUDA kernels on a real GPU. Skipped where there is none; they run on any machine
with a GPU and a CUDA build (`pytest python_tests/test_cuda.py`)."""
from __future__ import annotations

import pytest
import torch

import sae_ext

from conftest import HAS_CUDA_KERNELS, check_against_reference, cuda, make_rollout

OPS = torch.ops.sae
pytestmark = cuda


def _to(args, device):
    return tuple(None if t is None else t.to(device) for t in args)


@pytest.mark.parametrize("B,T", [(1, 1), (3, 31), (5, 33), (8, 256), (9, 257), (16, 1000), (2, 20000), (300, 77)])
@pytest.mark.parametrize("hyper", [(1.0, 0.5, 1.0, 0.2), (0.99, 0.95, 0.95, 0.2)])
def test_matches_reference(B, T, hyper):
    r, v, lp, m, bs = make_rollout(B, T, seed=B + T, reward_kind="dense")
    out = OPS.advantages(*_to((r, v, lp, m), "cuda"), *hyper, bs.cuda())
    assert out[0].is_cuda and out[0].is_contiguous()
    check_against_reference(tuple(t.cpu() for t in out), (r, v, lp, m, *hyper, bs), what=f"{B}x{T}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.bfloat16])
def test_dtypes(dtype, mask_dtype):
    r, v, lp, m, bs = make_rollout(7, 500, dtype=dtype, mask_dtype=mask_dtype, seed=1, reward_kind="dense")
    out = OPS.advantages(*_to((r, v, lp, m), "cuda"), 0.99, 0.6, 1.0, 0.2, bs.cuda())
    check_against_reference(tuple(t.cpu() for t in out), (r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs), what=str(dtype))


def test_noncontiguous_and_unaligned():
    r, v, lp, m, bs = make_rollout(6, 301, seed=2, reward_kind="dense")
    want = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    tr = [t.cuda().t().contiguous().t() for t in (r, v, lp, m)]
    off = [torch.cat([torch.zeros(6, 1, dtype=t.dtype), t], 1).cuda()[:, 1:] for t in (r, v, lp, m)]
    for args in (tr, off):
        got = OPS.advantages(*args, 1.0, 0.5, 1.0, 0.2, bs.cuda())
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, rtol=0, atol=2e-5)


def test_boundaries_and_backward_match_cpu():
    r, v, lp, m, bs = make_rollout(9, 700, seed=3, reward_kind="dense")
    assert torch.equal(OPS.segment_boundaries(lp.cuda(), m.cuda(), 0.2).cpu(), OPS.segment_boundaries(lp, m, 0.2))
    ga, gr = torch.randn(9, 700), torch.randn(9, 700)
    want = OPS.advantages_backward(ga, gr, m, lp, None, 0.98, 0.4, 1.0, 0.2)
    got = OPS.advantages_backward(ga.cuda(), gr.cuda(), m.cuda(), lp.cuda(), None, 0.98, 0.4, 1.0, 0.2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-5 * max(1.0, w.abs().max().item()))


def test_many_rows_beyond_one_grid_row_of_blocks():
    r, v, lp, m, bs = make_rollout(300_000, 9, seed=4, reward_kind="dense", mask_kind="random")
    want = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    got = OPS.advantages(*_to((r, v, lp, m), "cuda"), 1.0, 0.5, 1.0, 0.2, bs.cuda())
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-5)


def test_runs_on_the_current_stream():
    r, v, lp, m, bs = _to(make_rollout(64, 4096, seed=5, reward_kind="dense"), "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        adv, _ = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    s.synchronize()
    torch.testing.assert_close(adv, OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)[0])


def test_mixed_devices_raise_naming_the_argument():
    r, v, lp, m, bs = make_rollout(2, 10)
    with pytest.raises(RuntimeError, match="CUDA device"):
        OPS.advantages(r.cuda(), v, lp.cuda(), m.cuda(), 1.0, 0.5, 1.0, 0.2)
    with pytest.raises(RuntimeError, match="bootstrap"):
        OPS.advantages(r.cuda(), v.cuda(), lp.cuda(), m.cuda(), 1.0, 0.5, 1.0, 0.2, bs)


def test_gradcheck_and_compile_on_cuda():
    r, v, lp, m, bs = _to(make_rollout(3, 40, dtype=torch.float64, seed=6, reward_kind="dense"), "cuda")
    r, v, bs = (t.requires_grad_() for t in (r, v, bs))
    assert torch.autograd.gradcheck(lambda r, v, bs: OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs), (r, v, bs))
    f = torch.compile(lambda r, v, lp, m: sae_ext.advantages(r, v, lp, m, lam=0.5), fullgraph=True, dynamic=True)
    args = _to(make_rollout(5, 333, seed=7, reward_kind="dense")[:4], "cuda")
    torch.testing.assert_close(f(*args), sae_ext.advantages(*args, lam=0.5))


def test_cuda_kernels_registered_flag_is_consistent():
    assert HAS_CUDA_KERNELS
