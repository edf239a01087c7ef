"""A plain implementation of the SAE contract (docs/semantics.md), for reading and for
tests. It follows the contract's recursion literally, one time step at a time across the
batch; the compiled kernels compute the same thing in one fused pass. It computes in
float64 unless told otherwise (tests also run it in float32 to measure what rounding a
same-precision implementation incurs).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor


def segment_boundaries(logprobs: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """Token t starts a new segment iff mask[t] != 0 and logprobs[t] < log(threshold)."""
    log_p = math.log(threshold) if threshold > 0 else -math.inf
    return (mask != 0) & (logprobs.double() < log_p)


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
