"""A plain implementation of the SAE contract (docs/semantics.md), for reading and for
tests. It follows the contract's recursion literally, one time step at a time across the
batch; the compiled kernels compute the same thing in one fused pass. It computes in
float64 unless told otherwise (tests also run it in float32 to measure what rounding a
same-precision implementation incurs).

`step_order_advantages` and `step_order_adjoint` are the other mode: the same numbers
computed with csrc/sae_step.h's operations in its order, in the kernels' accumulation dtype,
so that tests can require the CPU kernels' outputs bit for bit
(python_tests/test_step_order.py).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor


def log_threshold(threshold: float) -> float:
    """log(p), or -inf when p = 0: with p = 0 no token starts a segment."""
    return math.log(threshold) if threshold > 0 else -math.inf


def segment_boundaries(logprobs: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """Token t starts a new segment iff mask[t] != 0 and logprobs[t] < log(threshold).

    Compared in float64. For float32 (or narrower) log-probs this is the kernels' rule too,
    which compares in float32 against the smallest float32 >= log(p): for a float32 x,
    x < log(p) exactly when x is below that float."""
    return (mask != 0) & (logprobs.double() < log_threshold(threshold))


def _per_row(x, B: int, dtype: torch.dtype, device) -> Tensor:
    """A float or a [B] tensor of lambdas as a [B] tensor."""
    return torch.as_tensor(x, dtype=dtype, device=device).expand(B).clone()


def _recursion(r: Tensor, v: Tensor, valid: Tensor, is_start: Tensor, gamma: float, lam_b: Tensor,
               lam_i: Tensor, bootstrap: Optional[Tensor]) -> Tensor:
    """The contract's recursion over t = T-1 .. 0; lam_b / lam_i are [B]."""
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=r.dtype, device=r.device)
    next_value = (bootstrap.to(r.dtype).clone() if bootstrap is not None
                  else torch.zeros(B, dtype=r.dtype, device=r.device))
    next_adv = torch.zeros(B, dtype=r.dtype, device=r.device)
    next_is_boundary = torch.zeros(B, dtype=torch.bool, device=r.device)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        lam_t = torch.where(next_is_boundary, lam_b, lam_i)
        a_t = delta + gamma * lam_t * next_adv
        ok = valid[:, t]
        adv[:, t] = torch.where(ok, a_t, 0.0)
        next_value = torch.where(ok, v[:, t], next_value)
        next_adv = torch.where(ok, a_t, next_adv)
        next_is_boundary = torch.where(ok, is_start[:, t], next_is_boundary)
    return adv


def advantages_from_boundaries(
    rewards: Tensor,
    values: Tensor,
    boundaries: Optional[Tensor],
    mask: Optional[Tensor],
    gamma: float,
    lam,
    lam_inner,
    bootstrap: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float64,
    lam_critic=None,
) -> Tuple[Tensor, Tensor]:
    """Advantages and returns (in `dtype`), from explicit segment starts (None: no starts).

    `lam`, `lam_inner` and `lam_critic` are floats or [B] tensors (row b uses element b).
    `mask` None: every token valid. With `lam_critic`, returns are A^c + V where A^c is the
    same recursion with lambda = lam_critic at every valid token (no segments)."""
    r, v = rewards.to(dtype), values.to(dtype)
    B, T = r.shape
    valid = mask != 0 if mask is not None else torch.ones(B, T, dtype=torch.bool, device=r.device)
    is_start = (boundaries.bool() & valid if boundaries is not None
                else torch.zeros(B, T, dtype=torch.bool, device=r.device))
    row = lambda x: _per_row(x, B, dtype, r.device)  # noqa: E731
    adv = _recursion(r, v, valid, is_start, gamma, row(lam), row(lam_inner), bootstrap)
    if lam_critic is None:
        returns = torch.where(valid, adv + v, 0.0)
    else:
        lc = row(lam_critic)
        adv_c = _recursion(r, v, valid, torch.zeros_like(is_start), gamma, lc, lc, bootstrap)
        returns = torch.where(valid, adv_c + v, 0.0)
    return adv, returns


def advantages(
    rewards: Tensor,
    values: Tensor,
    logprobs: Optional[Tensor],
    mask: Optional[Tensor],
    gamma: float,
    lam,
    lam_inner,
    threshold: float,
    bootstrap: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float64,
    lam_critic=None,
) -> Tuple[Tensor, Tensor]:
    """SAE advantages and returns (in `dtype`); `lam_inner == lam` is plain GAE; logprobs
    None: no segment starts. Arguments as :func:`advantages_from_boundaries`."""
    b = None
    if logprobs is not None:
        m = mask if mask is not None else torch.ones_like(logprobs, dtype=torch.bool)
        b = segment_boundaries(logprobs, m, threshold)
    return advantages_from_boundaries(rewards, values, b, mask, gamma, lam, lam_inner, bootstrap,
                                      dtype, lam_critic)


def gae(rewards: Tensor, values: Tensor, mask: Optional[Tensor], gamma: float, lam,
        bootstrap: Optional[Tensor] = None, dtype: torch.dtype = torch.float64,
        lam_critic=None) -> Tuple[Tensor, Tensor]:
    """Plain GAE: one lambda (a float or [B]) at every token."""
    return advantages_from_boundaries(rewards, values, None, mask, gamma, lam, lam, bootstrap,
                                      dtype, lam_critic)


def length_adaptive_lam(mask: Tensor, alpha: float = 0.05) -> Tensor:
    """VAPO: lam_b = 1 - 1/(alpha * l_b), l_b the valid tokens of row b, clamped to [0, 1];
    rows with alpha * l_b <= 1 (and empty rows) get 0. float64 [B]."""
    out = []
    for l_b in (mask != 0).sum(dim=1).tolist():
        x = alpha * l_b
        out.append(0.0 if x <= 1 else min(1.0, max(0.0, 1 - 1 / x)))
    return torch.tensor(out, dtype=torch.float64)


def advantages_varlen(rewards: Tensor, values: Tensor, logprobs: Optional[Tensor],
                      cu_seqlens: Tensor, mask: Optional[Tensor], gamma: float, lam, lam_inner,
                      threshold: float, bootstrap: Optional[Tensor] = None,
                      dtype: torch.dtype = torch.float64, lam_critic=None) -> Tuple[Tensor, Tensor]:
    """Packed rows: row b is x[cu[b]:cu[b+1]] of each 1-D input, computed as a [1, L_b] row of
    :func:`advantages` and written back to the same positions."""
    cu = cu_seqlens.tolist()
    B = len(cu) - 1
    adv = torch.zeros(rewards.shape[0], dtype=dtype)
    ret = torch.zeros(rewards.shape[0], dtype=dtype)
    pick = lambda x, b: x if x is None or not isinstance(x, Tensor) else x[b]  # noqa: E731
    for b in range(B):
        s, e = cu[b], cu[b + 1]
        if e == s:
            continue
        sl = lambda x: None if x is None else x[s:e].unsqueeze(0)  # noqa: E731
        a_b, r_b = advantages(sl(rewards), sl(values), sl(logprobs), sl(mask), gamma,
                              pick(lam, b), pick(lam_inner, b), threshold,
                              None if bootstrap is None else bootstrap[b:b + 1], dtype,
                              pick(lam_critic, b))
        adv[s:e], ret[s:e] = a_b[0], r_b[0]
    return adv, ret


# ------------------------------------------------------------------------------------------
# sae_step.h's operation order. Each torch op below rounds once in `acc`, as each C++
# operation does in the kernels (built with -ffp-contract=off: no fused multiply-adds).
def _lambdas(starts: Tensor, lam: float, lam_inner: float, acc: torch.dtype) -> Tensor:
    """token_lambda: lam at a segment start, lam_inner elsewhere, rounded to `acc`."""
    return torch.where(starts, torch.tensor(lam, dtype=acc), torch.tensor(lam_inner, dtype=acc))


def step_order_advantages(rewards: Tensor, values: Tensor, starts: Tensor, mask: Tensor,
                          gamma: float, lam: float, lam_inner: float,
                          bootstrap: Optional[Tensor], acc: torch.dtype) -> Tuple[Tensor, Tensor]:
    """forward_token over t = T-1 .. 0 with w carried through masked tokens:
    R = r + gamma * w; A = R - V; w <- (gamma * lambda_t) * w + (V + lambda_t * (r - V))."""
    B, T = rewards.shape
    r, v, valid = rewards.to(acc), values.to(acc), mask != 0
    lam_t = _lambdas(starts, lam, lam_inner, acc)
    g = torch.tensor(gamma, dtype=acc)
    w = bootstrap.to(acc).clone() if bootstrap is not None else torch.zeros(B, dtype=acc)
    adv = torch.zeros(B, T, dtype=acc)
    ret = torch.zeros(B, T, dtype=acc)
    for t in reversed(range(T)):
        ok = valid[:, t]
        ret_t = r[:, t] + g * w
        adv_t = ret_t - v[:, t]
        w_next = (g * lam_t[:, t]) * w + (v[:, t] + lam_t[:, t] * (r[:, t] - v[:, t]))
        adv[:, t] = torch.where(ok, adv_t, 0.0)
        ret[:, t] = torch.where(ok, ret_t, 0.0)
        w = torch.where(ok, w_next, w)
    return adv, ret


def step_order_adjoint(grad_advantages: Optional[Tensor], grad_returns: Optional[Tensor],
                       starts: Tensor, mask: Tensor, gamma: float, lam: float, lam_inner: float,
                       acc: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """adjoint_token over t = 0 .. T-1 with u carried through masked tokens:
    g = gA + gR; dr = g + lambda_t * u; dV = (1 - lambda_t) * u - gA;
    u <- (gamma * lambda_t) * u + gamma * g. Returns (d rewards, d values, d bootstrap = u)."""
    B, T = mask.shape
    valid = mask != 0
    zeros = torch.zeros(B, T, dtype=acc)
    ga = grad_advantages.to(acc) if grad_advantages is not None else zeros
    gr = grad_returns.to(acc) if grad_returns is not None else zeros
    lam_t = _lambdas(starts, lam, lam_inner, acc)
    g_ = torch.tensor(gamma, dtype=acc)
    u = torch.zeros(B, dtype=acc)
    dr = torch.zeros(B, T, dtype=acc)
    dv = torch.zeros(B, T, dtype=acc)
    for t in range(T):
        ok = valid[:, t]
        g = ga[:, t] + gr[:, t]
        dr[:, t] = torch.where(ok, g + lam_t[:, t] * u, 0.0)
        dv[:, t] = torch.where(ok, (1 - lam_t[:, t]) * u - ga[:, t], 0.0)
        u = torch.where(ok, (g_ * lam_t[:, t]) * u + g_ * g, u)
    return dr, dv, u
