"""Reference implementations the benchmark compares torch.ops.sae against.

Each takes the same inputs (rewards, values, logprobs, mask as [B, T] tensors; gamma, lam,
lam_inner, threshold) and returns (advantages, returns) in float32. They are written here
from the semantics in docs/semantics.md, in the style of the frameworks they are
named after; none is copied from those frameworks. With a mask that is a valid prefix per
row (trailing padding only, as the benchmark uses), all of them compute the contract's
values; only the `verl_style` loop and the numba loops also follow the contract across
holes in the mask (observation tokens).
"""
from __future__ import annotations

import math

import torch


def boundaries(logprobs, mask, threshold):
    """Token t starts a segment: valid and logprob < log(threshold)."""
    log_p = math.log(threshold) if threshold > 0 else -math.inf
    return (mask != 0) & (logprobs.float() < log_p)


def next_token_lambda(bnd, lam, lam_inner):
    """lambda_t applied to A_{t+1} at step t: lam where token t+1 starts a segment."""
    nxt = torch.zeros_like(bnd)
    nxt[:, :-1] = bnd[:, 1:]
    lam_t = torch.full(bnd.shape, lam_inner, dtype=torch.float32, device=bnd.device)
    return lam_t.masked_fill_(nxt, lam)


def verl_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
    """Per-token loop of batched tensor ops over t = T-1 .. 0, carrying the next valid
    token's value, advantage and boundary flag through masked tokens (the contract's
    recursion, which is how verl treats observation tokens)."""
    r, v = rewards.float(), values.float()
    valid = mask != 0
    B, T = r.shape
    sae = lam != lam_inner
    bnd = boundaries(logprobs, mask, threshold) if sae else None
    adv = torch.empty(B, T, dtype=torch.float32, device=r.device)
    next_value = torch.zeros(B, dtype=torch.float32, device=r.device)
    next_adv = torch.zeros_like(next_value)
    next_bnd = torch.zeros(B, dtype=torch.bool, device=r.device)
    for t in reversed(range(T)):
        ok = valid[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        lam_t = torch.where(next_bnd, lam, lam_inner) if sae else lam
        a = delta + gamma * lam_t * next_adv
        adv[:, t] = torch.where(ok, a, 0.0)
        next_value = torch.where(ok, v[:, t], next_value)
        next_adv = torch.where(ok, a, next_adv)
        if sae:
            next_bnd = torch.where(ok, bnd[:, t], next_bnd)
    returns = torch.where(valid, adv + v, 0.0)
    return adv, returns


def openrlhf_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
    """The reversed loop with `lastgaelam`: rewards and values are multiplied by the mask
    first, each step appends to a list that is stacked at the end. For SAE the lambda of
    step t comes from a per-token tensor (lam where token t+1 starts a segment)."""
    m = (mask != 0).float()
    r, v = rewards.float() * m, values.float() * m
    B, T = r.shape
    sae = lam != lam_inner
    lam_t = next_token_lambda(boundaries(logprobs, mask, threshold), lam, lam_inner) if sae else None
    lastgaelam = 0.0
    reversed_adv = []
    for t in reversed(range(T)):
        nextvalues = v[:, t + 1] if t < T - 1 else 0.0
        delta = r[:, t] + gamma * nextvalues - v[:, t]
        lastgaelam = delta + gamma * (lam_t[:, t] if sae else lam) * lastgaelam
        reversed_adv.append(lastgaelam)
    adv = torch.stack(reversed_adv[::-1], dim=1)
    returns = adv + v
    return adv, returns


def torchrl_gae():
    """TorchRL's generalized_advantage_estimate with a per-token lambda tensor, or None
    with the reason it cannot be imported."""
    try:
        from torchrl.objectives.value.functional import generalized_advantage_estimate
    except Exception as e:  # noqa: BLE001 - any import failure means: skip
        return None, f"torchrl not importable ({type(e).__name__}: {e})"

    def torchrl_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
        valid = mask != 0
        m = valid.float()
        r, v = rewards.float() * m, values.float() * m
        B, T = r.shape
        next_v = torch.zeros_like(v)
        next_v[:, :-1] = v[:, 1:]
        done = torch.ones_like(valid)
        done[:, :-1] = ~valid[:, 1:]  # the last valid token ends the trajectory
        sae = lam != lam_inner
        lmbda = (next_token_lambda(boundaries(logprobs, mask, threshold), lam, lam_inner).unsqueeze(-1)
                 if sae else lam)
        adv, target = generalized_advantage_estimate(
            gamma, lmbda, v.unsqueeze(-1), next_v.unsqueeze(-1), r.unsqueeze(-1),
            done.unsqueeze(-1), done.unsqueeze(-1), time_dim=-2)
        return adv.squeeze(-1), target.squeeze(-1) * m

    return torchrl_style, None


def numba_loops():
    """(serial, prange) numba implementations of the contract's recursion over float32
    numpy arrays, or (None, None, reason)."""
    try:
        import numba
        import numpy as np
        from numba import njit, prange
    except Exception as e:  # noqa: BLE001
        return None, None, f"numba not importable ({type(e).__name__}: {e})"

    def make(parallel):
        rng = prange if parallel else range

        @njit(parallel=parallel, cache=False)
        def kernel(r, v, lp, m, gamma, lam, lam_inner, log_p, sae, adv, ret):
            B, T = r.shape
            for b in rng(B):
                nv = np.float32(0.0)
                na = np.float32(0.0)
                nb = False
                for t in range(T - 1, -1, -1):
                    if m[b, t]:
                        delta = r[b, t] + gamma * nv - v[b, t]
                        lam_t = lam if nb else lam_inner
                        a = delta + gamma * lam_t * na
                        adv[b, t] = a
                        ret[b, t] = a + v[b, t]
                        nv = v[b, t]
                        na = a
                        nb = sae and lp[b, t] < log_p
                    else:
                        adv[b, t] = np.float32(0.0)
                        ret[b, t] = np.float32(0.0)

        def run(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
            r = rewards.float().numpy()
            v = values.float().numpy()
            lp = logprobs.float().numpy()
            m = (mask != 0).numpy()
            B, T = r.shape
            adv = np.empty((B, T), np.float32)
            ret = np.empty((B, T), np.float32)
            log_p = np.float32(math.log(threshold)) if threshold > 0 else np.float32(-np.inf)
            kernel(r, v, lp, m, np.float32(gamma), np.float32(lam), np.float32(lam_inner),
                   log_p, lam != lam_inner, adv, ret)
            return torch.from_numpy(adv), torch.from_numpy(ret)

        return run

    return make(False), make(True), f"numba {numba.__version__}"
