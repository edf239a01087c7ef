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


# ---- issue 12's variants -------------------------------------------------------------------
# The emulated warp runs the CUDA kernels' source, so these are the GPU kernels' logic. Against
# the CPU op they agree to rounding only (the warp composes per-lane maps with a shuffle scan,
# the CPU steps token by token), so they are compared within a tight bound, and against the
# float64 reference. Bit for bit, within the emulated warp, where the kernels' arithmetic is
# the same by construction: a row of a per-row-lambda call equals that row alone with its
# scalars, critic returns equal plain GAE returns with lam = lam_critic, packed rows equal the
# same rows padded, on either schedule.

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16


def _close(got, want, what, atol=2e-5):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} output {i}"
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        tol = 1e-12 if w.dtype == F64 else atol
        err = (g - w).abs().max().item() if w.numel() else 0.0
        assert err <= tol * scale, f"{what} output {i}: |emulated - cpu| = {err:.3g}"


def _equal(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} output {i}"
        if not torch.equal(g, w):
            bad = (g != w).nonzero()
            raise AssertionError(f"{what} output {i}: {len(bad)} elements differ, first at {bad[0].tolist()}")


def _lams(B, seed, dtype=F32):
    return torch.rand(B, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _rollout(B, T, seed, dtype=F32):
    return make_rollout(B, T, dtype=dtype, seed=seed, reward_kind="dense")


@pytest.mark.parametrize("lam_dtype", [F32, F64, BF16])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_per_row_lambdas(lam_dtype, dtype):
    B, T = 5, 300
    r, v, lp, m, bs = _rollout(B, T, seed=11, dtype=dtype)
    lam, lam_in = _lams(B, 1, lam_dtype), _lams(B, 2, lam_dtype)
    kw = dict(lam_rows=lam, lam_inner_rows=lam_in)
    got = OPS._warp_emulated_advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs, **kw)
    _close(got, OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs, **kw), "per-row lam vs cpu")
    for b in range(B):
        one = OPS._warp_emulated_advantages(r[b:b + 1], v[b:b + 1], lp[b:b + 1], m[b:b + 1], 0.99,
                                            float(lam[b]), float(lam_in[b]), 0.2, bs[b:b + 1])
        _equal((got[0][b:b + 1], got[1][b:b + 1]), one, f"row {b} vs alone")
    # one of the two per-row tensors, the other lambda the scalar
    got = OPS._warp_emulated_advantages(r, v, lp, m, 0.99, 0.5, 0.8, 0.2, bs, lam_rows=lam)
    _close(got, OPS.advantages(r, v, lp, m, 0.99, 0.5, 0.8, 0.2, bs, lam_rows=lam), "lam_rows only")
    check_against_reference(got, (r, v, lp, m, 0.99, lam.double(), 0.8, 0.2, bs), what="lam_rows only")


@pytest.mark.parametrize("dtype", [F32, F64, BF16])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("T", [1, 300, 5000])  # 5000 with B = 3: the split schedule
def test_critic_chain(dtype, per_row, T):
    B = 3 if T == 5000 else 6
    r, v, lp, m, bs = _rollout(B, T, seed=T + 3, dtype=dtype)
    kw = dict(lam_critic=0.9)
    if per_row:
        kw["lam_critic_rows"] = _lams(B, 4)
    got = OPS._warp_emulated_advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs, **kw)
    _close(got, OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs, **kw), "critic vs cpu")
    plain = OPS._warp_emulated_advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
    _equal(got[:1], plain[:1], "advantages with a critic chain")
    for b in range(B):
        c = float(kw["lam_critic_rows"][b]) if per_row else 0.9
        gae = OPS._warp_emulated_advantages(r[b:b + 1], v[b:b + 1], None, m[b:b + 1], 0.99, c, c, 0.2,
                                            bs[b:b + 1])
        _equal((got[1][b:b + 1],), (gae[1],), f"critic returns of row {b} vs GAE returns")


@pytest.mark.parametrize("dtype", [F32, BF16, F64, torch.float16])
@pytest.mark.parametrize("absent", ["mask", "logprobs", "both"])
def test_absent_mask_and_logprobs(dtype, absent):
    r, v, lp, m, bs = _rollout(5, 301, seed=21, dtype=dtype)
    lp_ = None if absent in ("logprobs", "both") else lp
    m_ = None if absent in ("mask", "both") else m
    for hyper in [(0.99, 0.5, 0.9, 0.2), (1.0, 0.7, 1.0, 0.3)]:
        got = OPS._warp_emulated_advantages(r, v, lp_, m_, *hyper, bs)
        _close(got, OPS.advantages(r, v, lp_, m_, *hyper, bs), f"no {absent} {hyper}")
        # the same as an all-true mask / log-probs that never cut
        full = torch.ones_like(m) if m_ is None else m_
        never = torch.zeros_like(lp) if lp_ is None else lp_
        thr = hyper[3] if lp_ is not None else 0.0
        _equal(got, OPS._warp_emulated_advantages(r, v, never, full, *hyper[:3], thr, bs), f"no {absent} vs explicit")
    got = OPS._warp_emulated_advantages(r, v, lp_, m_, 0.99, 0.5, 0.9, 0.2)  # no bootstrap either
    _close(got, OPS.advantages(r, v, lp_, m_, 0.99, 0.5, 0.9, 0.2), f"no {absent}, no bootstrap")


def test_from_boundaries_with_variants():
    r, v, lp, m, bs = _rollout(5, 400, seed=31)
    bnd = OPS.segment_boundaries(lp, m, 0.2)
    lam = _lams(5, 5)
    for mask in (m, None):
        kw = dict(lam_rows=lam, lam_critic=0.8)
        got = OPS._warp_emulated_advantages_from_boundaries(r, v, bnd, mask, 0.99, 0.5, 1.0, bs, **kw)
        _close(got, OPS.advantages_from_boundaries(r, v, bnd, mask, 0.99, 0.5, 1.0, bs, **kw), "boundaries")


def _packed_rollout(lengths, seed, holes, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    r, v = torch.randn(N, generator=g).to(dtype), torch.randn(N, generator=g).to(dtype)
    lp = (torch.rand(N, generator=g) ** 0.3).clamp_min(1e-6).log().to(dtype)
    mask = torch.rand(N, generator=g) > 0.3 if holes else None
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return r, v, lp, mask, torch.tensor(cu), torch.randn(len(lengths), generator=g).to(dtype)


def _pad(x, lengths, T, fill=0):
    out = torch.full((len(lengths), T), fill, dtype=x.dtype)
    o = 0
    for b, n in enumerate(lengths):
        out[b, :n] = x[o:o + n]
        o += n
    return out


# Row lengths: empty, one token, within a chunk, exactly a chunk, longer than a chunk, and
# (with few rows) long enough that the launcher splits rows across blocks. Lengths that are
# multiples of 8 keep every row start aligned (wide loads); the others misalign later rows.
PACKED = {
    "short": [0, 1, 7, 256, 300, 33, 0, 513],
    "aligned": [8, 0, 256, 520, 64, 1024],
    "split": [0, 9000, 1, 8200],
}


@pytest.mark.parametrize("layout", list(PACKED))
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_packed_rows_equal_padded_rows(layout, holes, idx_dtype):
    lengths = PACKED[layout]
    r, v, lp, mask, cu, bs = _packed_rollout(lengths, seed=len(lengths), holes=holes)
    cu = cu.to(idx_dtype)
    lam, lam_c = _lams(len(lengths), 7), _lams(len(lengths), 8)
    T = max(lengths) + 9
    pm = _pad(mask if mask is not None else torch.ones_like(r, dtype=torch.bool), lengths, T, False)
    pr, pv, plp = (_pad(x, lengths, T) for x in (r, v, lp))
    for kw in ({}, dict(lam_rows=lam), dict(lam_critic=0.9, lam_critic_rows=lam_c)):
        for lp_ in (lp, None):
            got = OPS._warp_emulated_advantages(r, v, lp_, mask, 0.99, 0.5, 1.0, 0.2, bs, cu_seqlens=cu, **kw)
            what = f"{layout} {sorted(kw)} logprobs={lp_ is not None}"
            _close(got, OPS.advantages(r, v, lp_, mask, 0.99, 0.5, 1.0, 0.2, bs, cu_seqlens=cu, **kw), what)
            if layout == "split" and kw:
                continue  # the padded twin of the split layout takes ~1 min to emulate; once is enough
            padded = OPS._warp_emulated_advantages(pr, pv, None if lp_ is None else plp, pm, 0.99, 0.5, 1.0,
                                                   0.2, bs, **kw)
            _equal(tuple(_pad(x, lengths, T) for x in got), padded, what + " vs padded")


@pytest.mark.parametrize("layout", ["short", "split"])
def test_packed_rows_adjoint(layout):
    lengths = PACKED[layout]
    r, v, lp, mask, cu, _ = _packed_rollout(lengths, seed=3, holes=True)
    g = torch.Generator().manual_seed(4)
    ga, gr = torch.randn(r.shape, generator=g), torch.randn(r.shape, generator=g)
    lam = _lams(len(lengths), 9)
    T = max(lengths) + 5
    for kw in ({}, dict(lam_rows=lam, lam_inner_rows=_lams(len(lengths), 10))):
        for cut in ((lp, None), (None, None)):
            args = (ga, gr, mask, *cut, 0.99, 0.5, 1.0, 0.2)
            got = OPS._warp_emulated_advantages_backward(*args, cu_seqlens=cu, **kw)
            want = OPS.advantages_backward(*args, cu_seqlens=cu, **kw)
            for x, w in zip(got, want):
                torch.testing.assert_close(x, w, rtol=0, atol=1e-5 * max(1.0, w.abs().max().item()))
            if layout == "split":
                continue
            pcut = tuple(None if c is None else _pad(c, lengths, T) for c in cut)
            padded = OPS._warp_emulated_advantages_backward(_pad(ga, lengths, T), _pad(gr, lengths, T),
                                                            _pad(mask, lengths, T, False), *pcut,
                                                            0.99, 0.5, 1.0, 0.2, **kw)
            _equal((_pad(got[0], lengths, T), _pad(got[1], lengths, T), got[2]), padded, f"adjoint {sorted(kw)}")


@pytest.mark.parametrize("T", [300, 5000])
def test_adjoint_per_row_lambdas_and_no_cuts(T):
    B = 3 if T == 5000 else 5
    _, _, lp, m, _ = _rollout(B, T, seed=41)
    g = torch.Generator().manual_seed(T)
    ga, gr = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lam, lam_in = _lams(B, 11), _lams(B, 12)
    for cut in ((lp, None), (None, None)):
        args = (ga, gr, m, *cut, 0.98, 0.4, 1.0, 0.2)
        got = OPS._warp_emulated_advantages_backward(*args, lam_rows=lam, lam_inner_rows=lam_in)
        want = OPS.advantages_backward(*args, lam_rows=lam, lam_inner_rows=lam_in)
        for x, w in zip(got, want):
            torch.testing.assert_close(x, w, rtol=0, atol=1e-5 * max(1.0, w.abs().max().item()))
        for b in range(B):
            one = OPS._warp_emulated_advantages_backward(
                ga[b:b + 1], gr[b:b + 1], m[b:b + 1], None if cut[0] is None else lp[b:b + 1], None,
                0.98, float(lam[b]), float(lam_in[b]), 0.2)
            _equal((got[0][b:b + 1], got[1][b:b + 1], got[2][b:b + 1]), one, f"adjoint row {b} vs alone")
