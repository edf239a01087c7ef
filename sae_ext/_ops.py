"""Typed, documented wrappers over torch.ops.sae.*. They add defaults and keyword-only
hyperparameters and nothing else: all computing happens in the compiled ops.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._input_check import check_inputs

__all__ = ["advantages", "advantages_from_boundaries", "check_inputs", "gae", "masked_whiten",
           "segment_boundaries"]


def advantages(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    mask: Tensor,
    *,
    lam: float,
    gamma: float = 1.0,
    lam_inner: float = 1.0,
    threshold: float = 0.2,
    bootstrap: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Segmental Advantage Estimation: advantages and returns for PPO.

    Args:
        rewards: [B, T] token rewards (RLVR: the verifiable reward on the last token).
        values: [B, T] critic values V(s_t), the value before token t is generated.
        logprobs: [B, T] log-probability of each sampled token under the policy that
            sampled it; a valid token with logprob < log(threshold) starts a new segment.
        mask: [B, T] nonzero on action tokens (bool, integer or float).
        lam: lambda applied where a new segment starts.
        gamma: discount.
        lam_inner: lambda inside a segment (1 for SAE; ``lam_inner == lam`` is plain GAE).
        threshold: probability p below which a sampled token cuts a segment (paper: 0.2).
        bootstrap: optional [B] value after each row's last valid token (truncated rows).

    Returns:
        ``(advantages, returns)``, [B, T] float32 (float64 if any float input is float64),
        contiguous, zero at masked positions. Not whitened: see :func:`masked_whiten`.

    The op checks shapes, dtypes and devices, not values: :func:`check_inputs` catches
    probabilities passed as ``logprobs``, NaNs and infinities.
    """
    return torch.ops.sae.advantages(
        rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, bootstrap)


def advantages_from_boundaries(
    rewards: Tensor,
    values: Tensor,
    boundaries: Tensor,
    mask: Tensor,
    *,
    lam: float,
    gamma: float = 1.0,
    lam_inner: float = 1.0,
    bootstrap: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Like :func:`advantages`, with segment starts given as a bool [B, T] tensor (your own
    segmentation: fixed length, every k-th token, line breaks...). Boundaries on masked
    positions are ignored."""
    return torch.ops.sae.advantages_from_boundaries(
        rewards, values, boundaries, mask, gamma, lam, lam_inner, bootstrap)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    bootstrap: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Plain GAE (one lambda everywhere) with masked tokens skipped; fused, no Python loop.

    Returns ``(advantages, returns)`` as :func:`advantages` does.
    """
    # With lam_inner == lam segment starts change nothing, so any float [B, T] tensor can
    # stand in for the log-probs; threshold 0 makes the op skip the comparison's effect.
    return torch.ops.sae.advantages(rewards, values, values, mask, gamma, lam, lam, 0.0, bootstrap)


def segment_boundaries(logprobs: Tensor, mask: Tensor, *, threshold: float = 0.2) -> Tensor:
    """bool [B, T]: True where a valid token starts a new segment
    (``mask != 0 and logprobs < log(threshold)``)."""
    return torch.ops.sae.segment_boundaries(logprobs, mask, threshold)


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    *,
    unbiased: bool = True,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """Whiten ``x`` with the mean and variance of its valid tokens across the whole batch.

    ``unbiased=True`` divides the variance by n - 1 (verl's choice), ``False`` by n
    (OpenRLHF's). ``shift_mean=False`` adds the mean back. Masked positions come out zero.
    """
    if x.shape != mask.shape:
        raise ValueError(f"masked_whiten: `mask` must have the shape of `x` {tuple(x.shape)}, "
                         f"got {tuple(mask.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"masked_whiten: `x` must be a floating tensor, got {x.dtype}")
    valid = mask != 0
    w = valid.to(x.dtype)
    n = w.sum()
    mean = (x * w).sum() / n
    centered = (x - mean) * w
    denom = n - 1 if unbiased else n
    var = (centered * centered).sum() / denom
    out = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * w
