"""Hypothesis property tests of torch.ops.sae.* against the contract (docs/semantics.md).

Inputs are small random [B, T] problems (B in 0..6, T in 0..70) in float32 and float64, with
every mask dtype, non-contiguous layouts, optional bootstrap, and hyperparameters drawn from
[0, 1] with the endpoints included. Examples are derandomized so CI is stable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sae_ext
from sae_ext import reference

ops = torch.ops.sae

SETTINGS = settings(
    deadline=None,
    max_examples=100,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MASK_DTYPES = [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64]
FLOAT_DTYPES = [torch.float32, torch.float64]

# A unit-interval hyperparameter: the endpoints often, plus anything in between.
unit = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, allow_nan=False))


def _lay(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as `x` [B, T], in a possibly non-contiguous layout."""
    if layout == "contiguous" or x.dim() != 2:
        return x.contiguous()
    B, T = x.shape
    if layout == "transposed":
        return x.t().contiguous().t()
    # "strided": every other column of a wider buffer
    buf = torch.zeros(B, 2 * T, dtype=x.dtype)
    buf[:, ::2] = x
    return buf[:, ::2]


@dataclass
class Problem:
    rewards: torch.Tensor
    values: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor
    bootstrap: Optional[torch.Tensor]
    gamma: float
    lam: float
    lam_inner: float
    threshold: float
    gen: torch.Generator

    @property
    def B(self) -> int:
        return self.rewards.shape[0]

    @property
    def T(self) -> int:
        return self.rewards.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        return self.mask != 0

    def scale(self) -> float:
        """A bound on the magnitude of the data, for tolerances."""
        m = 1.0
        for t in (self.rewards, self.values, self.bootstrap):
            if t is not None and t.numel():
                m += float(t.double().abs().max())
        return m

    def tol(self, dtype: torch.dtype) -> float:
        """Absolute tolerance for results computed in `dtype` over T steps."""
        per_step = 1e-15 if dtype == torch.float64 else 1e-7
        return per_step * (self.T + 1) * self.scale()

    def op(self, **over):
        """torch.ops.sae.advantages on this problem, with fields overridden by `over`."""
        kw = dict(rewards=self.rewards, values=self.values, logprobs=self.logprobs,
                  mask=self.mask, gamma=self.gamma, lam=self.lam, lam_inner=self.lam_inner,
                  threshold=self.threshold, bootstrap=self.bootstrap)
        kw.update(over)
        return ops.advantages(kw["rewards"], kw["values"], kw["logprobs"], kw["mask"],
                              kw["gamma"], kw["lam"], kw["lam_inner"], kw["threshold"],
                              kw["bootstrap"])


def _logprobs(gen, B, T, dtype, threshold, specials: bool) -> torch.Tensor:
    """log of uniform probabilities (so some fall below log(threshold)); with `specials`, some
    entries are set to values at the boundary of the comparison, to 0, -inf and NaN."""
    lp = torch.rand(B, T, generator=gen, dtype=torch.float64).clamp_min(1e-300).log()
    lp = lp.to(dtype)
    if specials and B * T:
        log_p = reference.log_threshold(threshold)
        edge = torch.tensor(log_p, dtype=torch.float64).to(dtype)  # nearest representable
        cands = [edge, torch.nextafter(edge, torch.tensor(-math.inf, dtype=dtype)),
                 torch.nextafter(edge, torch.tensor(math.inf, dtype=dtype)),
                 torch.tensor(0.0, dtype=dtype), torch.tensor(-math.inf, dtype=dtype),
                 torch.tensor(math.nan, dtype=dtype)]
        cands = torch.stack(cands)
        pick = torch.rand(B, T, generator=gen) < 0.3
        idx = torch.randint(0, len(cands), (B, T), generator=gen)
        lp = torch.where(pick, cands[idx], lp)
    return lp


@st.composite
def problems(draw, dtypes=FLOAT_DTYPES, mixed: bool = False, specials: bool = True,
             layouts=("contiguous", "transposed", "strided")):
    B = draw(st.integers(0, 6))
    T = draw(st.integers(0, 70))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if mixed:
        dt_r, dt_v, dt_l, dt_b = (draw(st.sampled_from(dtypes)) for _ in range(4))
    else:
        dt_r = dt_v = dt_l = dt_b = draw(st.sampled_from(dtypes))
    mask_dtype = draw(st.sampled_from(MASK_DTYPES))
    mask_pattern = draw(st.sampled_from(["random", "trailing", "all", "none"]))
    density = draw(st.sampled_from([0.3, 0.7, 0.9]))
    layout = draw(st.sampled_from(list(layouts)))
    data_scale = draw(st.sampled_from([1e-2, 1.0, 100.0]))
    with_bootstrap = draw(st.booleans())
    gamma, lam, lam_inner, threshold = (draw(unit) for _ in range(4))

    rewards = (torch.randn(B, T, generator=gen, dtype=torch.float64) * data_scale).to(dt_r)
    values = (torch.randn(B, T, generator=gen, dtype=torch.float64) * data_scale).to(dt_v)
    logprobs = _logprobs(gen, B, T, dt_l, threshold, specials and draw(st.booleans()))
    if mask_pattern == "random":
        valid = torch.rand(B, T, generator=gen) < density
    elif mask_pattern == "trailing":
        lengths = torch.randint(0, T + 1, (B,), generator=gen)
        valid = torch.arange(T)[None, :] < lengths[:, None]
    elif mask_pattern == "all":
        valid = torch.ones(B, T, dtype=torch.bool)
    else:
        valid = torch.zeros(B, T, dtype=torch.bool)
    if mask_dtype.is_floating_point:
        # any nonzero counts as valid: use non-unit weights too
        mask = valid.to(mask_dtype) * (0.5 + torch.rand(B, T, generator=gen)).to(mask_dtype)
    elif mask_dtype == torch.bool:
        mask = valid
    else:
        mask = valid.to(mask_dtype) * torch.randint(1, 3, (B, T), generator=gen).to(mask_dtype)
    bootstrap = None
    if with_bootstrap:
        bootstrap = (torch.randn(B, generator=gen, dtype=torch.float64) * data_scale).to(dt_b)
    return Problem(_lay(rewards, layout), _lay(values, layout), _lay(logprobs, layout),
                   _lay(mask, layout), bootstrap, gamma, lam, lam_inner, threshold, gen)


def _assert_same(actual, expected, what=""):
    """Bitwise equality (both outputs), with a readable message."""
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, (what, i, a.dtype, e.dtype, a.shape)
        if not torch.equal(a, e):
            diff = (a.double() - e.double()).abs()
            j = int(diff.argmax())
            raise AssertionError(f"{what} output {i} differs: max |diff| {float(diff.max())} at "
                                 f"flat index {j}: {a.flatten()[j].item()} vs "
                                 f"{e.flatten()[j].item()}")


def _assert_close(actual, expected, atol, what=""):
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, (what, a.shape, e.shape)
    if a.numel():
        err = float((a - e).abs().max())
        assert err <= atol, f"{what}: max |diff| {err} > {atol}"


def _acc_dtype(p: Problem) -> torch.dtype:
    ts = [p.rewards, p.values, p.logprobs] + ([p.bootstrap] if p.bootstrap is not None else [])
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


# (a) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems())
def test_lam_inner_equal_lam_ignores_logprobs_and_is_gae(p: Problem):
    lam = p.lam
    out1 = p.op(lam_inner=lam)
    other = _logprobs(p.gen, p.B, p.T, p.logprobs.dtype, p.threshold, True)
    out2 = p.op(lam_inner=lam, logprobs=other)
    _assert_same(out1, out2, "lam_inner == lam, other logprobs")
    out3 = p.op(lam_inner=lam, threshold=1.0)  # every token below prob 1 is a boundary
    _assert_same(out1, out3, "lam_inner == lam, threshold 1")
    g = sae_ext.gae(p.rewards, p.values, p.mask, gamma=p.gamma, lam=lam, bootstrap=p.bootstrap)
    _assert_same(out1, g, "vs sae_ext.gae")


# (b) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems())
def test_threshold_zero_means_no_boundaries(p: Problem):
    b = ops.segment_boundaries(p.logprobs, p.mask, 0.0)
    assert b.dtype == torch.bool and b.shape == p.logprobs.shape
    assert not bool(b.any())
    out = p.op(threshold=0.0)
    _assert_same(out, p.op(threshold=0.0, lam=p.lam_inner), "p = 0 vs lam := lam_inner")
    g = sae_ext.gae(p.rewards, p.values, p.mask, gamma=p.gamma, lam=p.lam_inner,
                    bootstrap=p.bootstrap)
    _assert_same(out, g, "p = 0 vs gae(lam_inner)")


# (c) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems())
def test_masking_a_token_equals_deleting_it(p: Problem):
    adv, ret = p.op()
    valid = p.valid
    assert bool((adv[~valid] == 0).all()) and bool((ret[~valid] == 0).all())
    tol = p.tol(adv.dtype)
    for b in range(p.B):
        idx = valid[b].nonzero().flatten()
        n = idx.numel()
        row = lambda x: x[b, idx].clone().reshape(1, n)  # noqa: E731  a new [1, n] tensor
        bs = None if p.bootstrap is None else p.bootstrap[b:b + 1].clone()
        a1, r1 = ops.advantages(row(p.rewards), row(p.values), row(p.logprobs),
                                torch.ones(1, n, dtype=p.mask.dtype), p.gamma, p.lam,
                                p.lam_inner, p.threshold, bs)
        assert a1.shape == (1, n) and a1.dtype == adv.dtype
        _assert_close(adv[b, idx], a1[0], tol, f"advantages, row {b}")
        _assert_close(ret[b, idx], r1[0], tol, f"returns, row {b}")


# (d) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems(), a=st.floats(-3, 3), c=st.floats(-3, 3))
def test_linear_in_rewards_values_bootstrap(p: Problem, a: float, c: float):
    g = p.gen
    dt = p.rewards.dtype
    r2 = torch.randn(p.B, p.T, generator=g, dtype=torch.float64).to(dt)
    v2 = torch.randn(p.B, p.T, generator=g, dtype=torch.float64).to(dt)
    b1 = p.bootstrap if p.bootstrap is not None else torch.zeros(p.B, dtype=dt)
    b2 = torch.randn(p.B, generator=g, dtype=torch.float64).to(b1.dtype)
    # combine in float64 then round once to the input dtype
    comb = lambda x, y: (a * x.double() + c * y.double()).to(x.dtype)  # noqa: E731
    r, v, bs = comb(p.rewards, r2), comb(p.values, v2), comb(b1, b2)
    lhs = p.op(rewards=r, values=v, bootstrap=bs)
    o1 = p.op(bootstrap=b1)
    o2 = p.op(rewards=r2, values=v2, bootstrap=b2)
    scale = (abs(a) + abs(c) + 1) * (p.scale() + 4)
    per_step = 1e-15 if lhs[0].dtype == torch.float64 else 1e-7
    # inputs of the combination were rounded to dt: allow for that too
    tol = per_step * (p.T + 1) * scale * 4
    for i in range(2):
        rhs = a * o1[i].double() + c * o2[i].double()
        _assert_close(lhs[i], rhs, tol, f"linearity, output {i}")


# (e) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems(mixed=True))
def test_matches_reference(p: Problem):
    adv, ret = p.op()
    acc = _acc_dtype(p)
    for out in (adv, ret):
        assert out.dtype == acc
        assert out.shape == p.rewards.shape
        assert out.is_contiguous()
    ra, rr = reference.advantages(p.rewards, p.values, p.logprobs, p.mask, p.gamma, p.lam,
                                  p.lam_inner, p.threshold, p.bootstrap)
    tol = p.tol(acc)
    _assert_close(adv, ra, tol, "advantages vs reference")
    _assert_close(ret, rr, tol, "returns vs reference")
    valid = p.valid
    assert bool((adv[~valid] == 0).all()) and bool((ret[~valid] == 0).all())
    b = ops.segment_boundaries(p.logprobs, p.mask, p.threshold)
    assert torch.equal(b, reference.segment_boundaries(p.logprobs, p.mask, p.threshold))


@SETTINGS
@given(p=problems(dtypes=[torch.float64]))
def test_matches_reference_float64_tight(p: Problem):
    adv, ret = p.op()
    assert adv.dtype == torch.float64
    ra, rr = reference.advantages(p.rewards, p.values, p.logprobs, p.mask, p.gamma, p.lam,
                                  p.lam_inner, p.threshold, p.bootstrap)
    # float64 in and out: the same recursion, so agreement to ~1e-12 of the data scale
    _assert_close(adv, ra, 1e-12 * p.scale(), "float64 advantages")
    _assert_close(ret, rr, 1e-12 * p.scale(), "float64 returns")


@SETTINGS
@given(p=problems(dtypes=[torch.float32]))
def test_matches_reference_float32(p: Problem):
    adv, ret = p.op()
    assert adv.dtype == torch.float32
    ra, rr = reference.advantages(p.rewards, p.values, p.logprobs, p.mask, p.gamma, p.lam,
                                  p.lam_inner, p.threshold, p.bootstrap)
    _assert_close(adv, ra, p.tol(torch.float32), "float32 advantages")
    _assert_close(ret, rr, p.tol(torch.float32), "float32 returns")


# (f) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems())
def test_from_boundaries_of_segment_boundaries_equals_advantages(p: Problem):
    b = sae_ext.segment_boundaries(p.logprobs, p.mask, threshold=p.threshold)
    assert b.dtype == torch.bool and b.shape == p.logprobs.shape and b.is_contiguous()
    assert not bool(b[~p.valid].any())
    out_b = sae_ext.advantages_from_boundaries(p.rewards, p.values, b, p.mask, lam=p.lam,
                                               gamma=p.gamma, lam_inner=p.lam_inner,
                                               bootstrap=p.bootstrap)
    out = sae_ext.advantages(p.rewards, p.values, p.logprobs, p.mask, lam=p.lam, gamma=p.gamma,
                             lam_inner=p.lam_inner, threshold=p.threshold,
                             bootstrap=p.bootstrap)
    _assert_same(out_b, out, "from_boundaries(segment_boundaries) vs advantages")


# (g) ------------------------------------------------------------------------------------
@SETTINGS
@given(p=problems(), density=st.sampled_from([0.1, 0.5, 0.9]))
def test_boundaries_on_masked_positions_are_ignored(p: Problem, density: float):
    valid = p.valid
    b = torch.rand(p.B, p.T, generator=p.gen) < density
    noise = torch.rand(p.B, p.T, generator=p.gen) < 0.5
    args = lambda bd: (p.rewards, p.values, bd, p.mask, p.gamma, p.lam, p.lam_inner,  # noqa
                       p.bootstrap)
    base = ops.advantages_from_boundaries(*args(b & valid))
    for other in (b | ~valid, (b & valid) | (noise & ~valid), b):
        _assert_same(ops.advantages_from_boundaries(*args(other)), base,
                     "boundaries differing only on masked positions")
    ra, rr = reference.advantages_from_boundaries(*args(b))
    _assert_close(base[0], ra, p.tol(base[0].dtype), "vs reference")
    _assert_close(base[1], rr, p.tol(base[0].dtype), "vs reference")
