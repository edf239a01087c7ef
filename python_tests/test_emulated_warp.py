"""The CUDA kernel's per-warp algorithm (csrc/cuda/sae_warp.h), run on the CPU with an
emulated 32-lane warp through the test hook ops, against the reference and the CPU op.
The chunk is 32 lanes x 8 tokens = 256 tokens; lengths straddle every edge of that."""
from __future__ import annotations

import pytest
import torch

from conftest import check_against_reference, make_rollout

OPS = torch.ops.sae
LENGTHS = [1, 7, 8, 9, 31, 32, 33, 255, 256, 257, 1000, 2311]


@pytest.mark.parametrize("T", LENGTHS)
def test_lengths_against_reference(T):
    r, v, lp, m, bs = make_rollout(6, T, seed=T, reward_kind="dense")  # rows: full, padded, holes, all-masked
    for hyper in [(1.0, 0.5, 1.0, 0.2), (0.97, 0.9, 0.9, 0.2)]:
        out = OPS._warp_emulated_advantages(r, v, lp, m, *hyper, bs)
        check_against_reference(out, (r, v, lp, m, *hyper, bs), what=f"T={T} {hyper}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32, torch.float32, torch.bfloat16])
def test_dtypes_against_reference(dtype, mask_dtype):
    r, v, lp, m, bs = make_rollout(5, 300, dtype=dtype, mask_dtype=mask_dtype, seed=1, reward_kind="dense")
    out = OPS._warp_emulated_advantages(r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs)
    assert out[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    check_against_reference(out, (r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs), what=str(dtype))


def test_unaligned_and_strided_views_take_the_scalar_path_correctly():
    r, v, lp, m, bs = make_rollout(4, 301, seed=2, reward_kind="dense")
    # Offsetting by one element breaks 16-byte alignment; a transpose breaks unit stride.
    off = [torch.cat([torch.zeros(4, 1, dtype=t.dtype), t], 1)[:, 1:] for t in (r, v, lp, m)]
    tr = [t.t().contiguous().t() for t in (r, v, lp, m)]
    want = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    for args in (off, tr):
        got = OPS._warp_emulated_advantages(*args, 1.0, 0.5, 1.0, 0.2, bs)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=2e-5)


@pytest.mark.parametrize("T", [1, 33, 256, 700])
def test_adjoint_matches_cpu_adjoint(T):
    r, v, lp, m, _ = make_rollout(5, T, seed=T + 5, reward_kind="dense")
    ga, gr = torch.randn(5, T), torch.randn(5, T)
    for grads in [(ga, gr), (ga, None), (None, gr)]:
        want = OPS.advantages_backward(*grads, m, lp, None, 0.98, 0.4, 1.0, 0.2)
        got = OPS._warp_emulated_advantages_backward(*grads, m, lp, None, 0.98, 0.4, 1.0, 0.2)
        for g, w in zip(got, want):
            scale = max(1.0, w.abs().max().item())
            torch.testing.assert_close(g, w, rtol=0, atol=1e-5 * scale)
    b = OPS.segment_boundaries(lp, m, 0.2)
    want = OPS.advantages_backward(ga, gr, m, None, b, 0.98, 0.4, 1.0, 0.0)
    got = OPS._warp_emulated_advantages_backward(ga, gr, m, None, b, 0.98, 0.4, 1.0, 0.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5 * max(1.0, w.abs().max().item()))
