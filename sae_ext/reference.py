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


def advantages_from_boundaries(
    rewards: Tensor,
    values: Tensor,
    boundaries: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    lam_inner: float,
    bootstrap: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float64,
) -> Tuple[Tensor, Tensor]:
    """Advantages and returns (in `dtype`), from explicit segment starts."""
    r, v = rewards.to(dtype), values.to(dtype)
    valid = mask != 0
    is_start = boundaries.bool() & valid
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=dtype, device=r.device)
    next_value = (
        bootstrap.to(dtype).clone() if bootstrap is not None
        else torch.zeros(B, dtype=dtype, device=r.device)
    )
    next_adv = torch.zeros(B, dtype=dtype, device=r.device)
    next_is_boundary = torch.zeros(B, dtype=torch.bool, device=r.device)
    lam_b = torch.tensor(lam, dtype=dtype, device=r.device)
    lam_i = torch.tensor(lam_inner, dtype=dtype, device=r.device)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        lam_t = torch.where(next_is_boundary, lam_b, lam_i)
        a_t = delta + gamma * lam_t * next_adv
        ok = valid[:, t]
        adv[:, t] = torch.where(ok, a_t, 0.0)
        next_value = torch.where(ok, v[:, t], next_value)
        next_adv = torch.where(ok, a_t, next_adv)
        next_is_boundary = torch.where(ok, is_start[:, t], next_is_boundary)
    returns = torch.where(valid, adv + v, 0.0)
    return adv, returns


def advantages(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    lam_inner: float,
    threshold: float,
    bootstrap: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float64,
) -> Tuple[Tensor, Tensor]:
    """SAE advantages and returns (in `dtype`); `lam_inner == lam` is plain GAE."""
    b = segment_boundaries(logprobs, mask, threshold)
    return advantages_from_boundaries(rewards, values, b, mask, gamma, lam, lam_inner, bootstrap, dtype)


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
