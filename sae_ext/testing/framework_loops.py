"""GAE/SAE the way PPO frameworks write it: a Python loop over t = T-1 .. 0 of batched tensor
ops. The tests compare the ops and the integrations against these; bench/run.py times them.
Written from each framework's semantics, not copied from it.

- `verl_loop`: carries the next valid token's value, advantage and segment flag through
  masked tokens (verl's treatment of observation tokens; the contract's recursion) and
  writes 0 at masked positions.
- `openrlhf_loop`: multiplies rewards and values by the mask, then runs the recursion over
  every position (a hole's zeros take part), `lastgaelam` appended to a list and stacked.
- `trl_loop`: the same chain over every position, values unmasked, then whitened over the
  response tokens; zeros on padding.

Each computes in `dtype` (float32, as the frameworks do; the tests pass float64) and takes
SAE's segment starts as a bool [B, T] `boundaries` with `lam_inner`; without them, plain GAE.
`boundaries()` finds the starts in the same dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..reference import log_threshold


def boundaries(logprobs: Tensor, mask: Tensor, threshold: float, dtype=torch.float32) -> Tensor:
    """Token t starts a segment: valid and logprob < log(threshold), compared in `dtype`."""
    return (mask != 0) & (logprobs.to(dtype) < log_threshold(threshold))


def next_token_lambda(starts: Tensor, lam: float, lam_inner: float, dtype=torch.float32) -> Tensor:
    """lambda_t applied to A_{t+1} at step t: lam where token t+1 starts a segment."""
    nxt = torch.zeros_like(starts)
    nxt[:, :-1] = starts[:, 1:]
    lam_t = torch.full(starts.shape, lam_inner, dtype=dtype, device=starts.device)
    return lam_t.masked_fill_(nxt, lam)


def verl_loop(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float, *,
              boundaries: Optional[Tensor] = None, lam_inner: Optional[float] = None,
              bootstrap: Optional[Tensor] = None, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    r, v = rewards.to(dtype), values.to(dtype)
    valid = mask != 0
    B, T = r.shape
    sae = boundaries is not None
    adv = torch.empty(B, T, dtype=dtype, device=r.device)
    next_value = (bootstrap.to(dtype).clone() if bootstrap is not None
                  else torch.zeros(B, dtype=dtype, device=r.device))
    next_adv = torch.zeros(B, dtype=dtype, device=r.device)
    next_bnd = torch.zeros(B, dtype=torch.bool, device=r.device)
    for t in reversed(range(T)):
        ok = valid[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        lam_t = (torch.where(next_bnd, torch.tensor(lam, dtype=dtype), torch.tensor(lam_inner, dtype=dtype))
                 if sae else lam)
        a = delta + gamma * lam_t * next_adv
        adv[:, t] = torch.where(ok, a, 0.0)
        next_value = torch.where(ok, v[:, t], next_value)
        next_adv = torch.where(ok, a, next_adv)
        if sae:
            next_bnd = torch.where(ok, boundaries[:, t], next_bnd)
    returns = torch.where(valid, adv + v, 0.0)
    return adv, returns


def _position_chain(r: Tensor, v: Tensor, gamma: float, lam: float, lam_t: Optional[Tensor]) -> Tensor:
    """A_t = r_t + gamma * V_{t+1} - V_t + gamma * lambda_t * A_{t+1} over every position,
    V = 0 after the last."""
    T = r.shape[1]
    lastgaelam = 0.0
    reversed_adv = []
    for t in reversed(range(T)):
        nextvalues = v[:, t + 1] if t < T - 1 else 0.0
        delta = r[:, t] + gamma * nextvalues - v[:, t]
        lastgaelam = delta + gamma * (lam if lam_t is None else lam_t[:, t]) * lastgaelam
        reversed_adv.append(lastgaelam)
    if not reversed_adv:
        return torch.zeros_like(r)
    return torch.stack(reversed_adv[::-1], dim=1)


def openrlhf_loop(rewards: Tensor, values: Tensor, mask: Optional[Tensor], gamma: float, lam: float,
                  *, boundaries: Optional[Tensor] = None, lam_inner: Optional[float] = None,
                  dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """`mask` None: every position is an action."""
    r, v = rewards.to(dtype), values.to(dtype)
    if mask is not None:
        m = (mask != 0).to(dtype)
        r, v = r * m, v * m
    lam_t = None if boundaries is None else next_token_lambda(boundaries, lam, lam_inner, dtype)
    adv = _position_chain(r, v, gamma, lam, lam_t)
    return adv, adv + v


def trl_loop(rewards: Tensor, values: Tensor, padding_mask: Tensor, gamma: float, lam: float, *,
             whiten: bool = True, boundaries: Optional[Tensor] = None,
             lam_inner: Optional[float] = None, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """`padding_mask`: True on padding. Whitening: mean and unbiased variance over the
    response tokens, ``rsqrt(var + 1e-8)``."""
    adv, returns = openrlhf_loop(rewards, values, None, gamma, lam, boundaries=boundaries,
                                 lam_inner=lam_inner, dtype=dtype)
    if whiten:
        sel = adv[~padding_mask]
        mean = sel.mean()
        var = ((sel - mean) ** 2).mean() * sel.numel() / (sel.numel() - 1)
        adv = (adv - mean) * torch.rsqrt(var + 1e-8)
    return adv.masked_fill(padding_mask, 0.0), returns
