"""The CPU kernels bit for bit against sae_ext.reference's step-order mode, a torch re-enactment
of csrc/sae_step.h's operations in their order in the accumulation dtype.

The float64 reference tests elsewhere allow rounding; these allow none, so they fail when
sae_step.h's arithmetic is reordered (e.g. w's map written as (1 - lambda) * V + lambda * r)
even where the result stays within tolerance. Inputs: float32/bfloat16/float16/float64 mixes,
bool/integer/float masks (with holes, -0.0 and NaN entries, trailing padding, all-masked
rows), NaN log-probs, strided layouts, odd shapes, bootstrap values, four hyperparameter sets.
Other vector builds (SAE_CPU_VECTOR) and thread counts are held bitwise equal to this build by
test_cpu_paths.py, so they meet the same re-enactment.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from sae_ext import reference

ops = torch.ops.sae
F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16

SAE = (1.0, 0.5, 1.0, 0.2)
GAE = (0.99, 0.95, 0.95, 0.2)
EDGE = (1.0, 0.0, 1.0, 1.0)
P0 = (0.9, 0.3, 0.7, 0.0)


def _layout(x, how):
    if how == "contig":
        return x
    if how == "transposed":
        return x.t().contiguous().t()
    if how == "slice":  # every other column of a wider tensor
        big = torch.zeros(x.shape[0], 2 * x.shape[1] + 3, dtype=x.dtype)
        big[:, 1:2 * x.shape[1] + 1:2] = x
        return big[:, 1:2 * x.shape[1] + 1:2]
    if how == "rowpad":  # contiguous rows, row stride > T
        big = torch.zeros(x.shape[0], x.shape[1] + 5, dtype=x.dtype)
        big[:, 2:2 + x.shape[1]] = x
        return big[:, 2:2 + x.shape[1]]
    raise ValueError(how)


def _inputs(B, T, dts, mask_dt, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, generator=g)
    v = torch.randn(B, T, generator=g)
    lp = -torch.rand(B, T, generator=g) * 3
    lp[torch.rand(B, T, generator=g) < 0.02] = float("nan")
    valid = torch.rand(B, T, generator=g) > 0.3
    for b in range(B):  # trailing padding, one all-masked row
        valid[b, int(torch.randint(0, T + 1, (), generator=g)):] = False
    if B > 2:
        valid[1] = False
    if mask_dt == torch.bool:
        mask = valid
    elif mask_dt.is_floating_point:
        mask = valid.to(mask_dt)
        mask[~valid] = -0.0  # -0.0 is masked...
        nan = torch.rand(B, T, generator=g) < 0.01
        mask[nan] = float("nan")  # ...NaN is not zero, so valid
    else:
        mask = valid.to(mask_dt) * 3
    return r.to(dts[0]), v.to(dts[1]), lp.to(dts[2]), mask


def _same_bits(name, got, want):
    assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, want.dtype)
    same = (got == want) | (got.isnan() & want.isnan())
    assert bool(same.all()), f"{name}: {int((~same).sum())} of {same.numel()} differ, largest by " \
        f"{(got.double() - want.double()).abs().nan_to_num().max().item():.3g}"


SHAPES = [(1, 1), (1, 7), (3, 8), (5, 17), (9, 33), (17, 100), (40, 250), (70, 45)]
DTYPES = [(F32, F32, F32), (BF16, BF16, BF16), (F16, F16, F16), (F64, F64, F64),
          (F32, BF16, F64), (BF16, F32, F16), (F16, F64, F32)]
MASKS = [torch.bool, torch.uint8, torch.int32, torch.float32, torch.bfloat16, torch.int64]
LAYOUTS = ["contig", "transposed", "slice", "rowpad"]


def _cases():
    """Every shape, dtype mix, mask dtype and layout appears; their combinations rotate."""
    out = []
    for n, (shape, dts) in enumerate(itertools.product(SHAPES, DTYPES)):
        mask_dt = MASKS[n % len(MASKS)]
        how = LAYOUTS[(n // 2) % len(LAYOUTS)]
        hyper = (SAE, GAE, EDGE, P0)[n % 4]
        bs_dt = (None, F32, BF16, F64)[(n // 3) % 4]
        out.append(pytest.param(shape, dts, mask_dt, how, hyper, bs_dt, n,
                                id=f"{shape[0]}x{shape[1]}-{'-'.join(str(d)[6:] for d in dts)}"
                                   f"-{str(mask_dt)[6:]}-{how}-{hyper}-bs{str(bs_dt)[6:]}"))
    return out


@pytest.mark.parametrize("shape, dts, mask_dt, how, hyper, bs_dt, seed", _cases())
def test_kernels_follow_sae_step_bit_for_bit(shape, dts, mask_dt, how, hyper, bs_dt, seed):
    B, T = shape
    gamma, lam, lam_inner, p = hyper
    r, v, lp, mask = _inputs(B, T, dts, mask_dt, seed)
    bs = torch.randn(B, generator=torch.Generator().manual_seed(seed)).to(bs_dt) if bs_dt else None
    R, V, LP, M = (_layout(x, how) for x in (r, v, lp, mask))
    starts = reference.segment_boundaries(lp, mask, p)
    acc = F64 if F64 in (*dts, bs_dt) else F32
    acc_bd = F64 if F64 in (dts[0], dts[1], bs_dt) else F32  # boundaries: log-probs not read

    adv, ret = ops.advantages(R, V, LP, M, gamma, lam, lam_inner, p, bs)
    want = reference.step_order_advantages(r, v, starts, mask, gamma, lam, lam_inner, bs, acc)
    _same_bits("advantages", adv, want[0])
    _same_bits("returns", ret, want[1])

    BD = _layout(starts, how)
    adv, ret = ops.advantages_from_boundaries(R, V, BD, M, gamma, lam, lam_inner, bs)
    want = reference.step_order_advantages(r, v, starts, mask, gamma, lam, lam_inner, bs, acc_bd)
    _same_bits("advantages_from_boundaries advantages", adv, want[0])
    _same_bits("advantages_from_boundaries returns", ret, want[1])

    g = torch.Generator().manual_seed(seed + 1)
    ga, gr = torch.randn(B, T, generator=g).to(dts[0]), torch.randn(B, T, generator=g).to(dts[1])
    for gA, gR in ((ga, gr), (ga, None), (None, gr)):
        acc_g = F64 if any(x is not None and x.dtype == F64 for x in (gA, gR)) else F32
        GA = None if gA is None else _layout(gA, how)
        GR = None if gR is None else _layout(gR, how)
        want = reference.step_order_adjoint(gA, gR, starts, mask, gamma, lam, lam_inner, acc_g)
        for cut in ((LP, None), (None, BD)):
            got = ops.advantages_backward(GA, GR, M, *cut, gamma, lam, lam_inner, p)
            for name, a, b in zip(("d rewards", "d values", "d bootstrap"), got, want):
                _same_bits(f"advantages_backward {name}", a, b)
