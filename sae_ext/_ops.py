"""Typed, documented wrappers over torch.ops.sae.*. They add defaults and keyword-only
hyperparameters and nothing else: all computing happens in the compiled ops.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ._input_check import check_inputs

__all__ = ["advantages", "advantages_from_boundaries", "advantages_varlen", "check_inputs", "gae",
           "gae_varlen", "length_adaptive_lam", "masked_whiten", "segment_boundaries"]

Lam = Union[float, Tensor]


def _per_row(x: Optional[Lam], n_rows: int) -> Tuple[Optional[float], Optional[Tensor]]:
    """A lambda as the ops take it: (float, None) or (unused float, [B] tensor). A 0-d tensor
    is one value for every row, passed as a stride-0 view (no copy, no host sync)."""
    if x is None or not isinstance(x, Tensor):
        return x, None
    if x.dim() == 0:
        x = x.expand(n_rows)
    return 0.0, x


_functorch_level = torch._C._functorch.peek_interpreter_stack


def _call(op, *args, **kwargs):
    """``op(*args, **kwargs)``, below the autograd layer when no gradient can be asked for.

    Every call of a custom op with a Python autograd formula goes through torch's autograd
    kernel, which only decides that no graph is needed and redispatches below itself: about
    5 us of Python on each call, as much as a small batch's whole kernel. The same test done
    here skips it. It is done only where it cannot change a result: not while torch.compile
    traces (Dynamo sees the plain op), not under torch.func's transforms, only for plain
    tensors (no subclasses: FakeTensor, DTensor), and never when grad mode is on and an input
    requires grad (then the op goes through autograd as always)."""
    if torch.compiler.is_compiling() or _functorch_level() is not None:
        return op(*args, **kwargs)
    grad = torch.is_grad_enabled()
    for x in (*args, *kwargs.values()):  # the schemas take no lists of tensors
        if isinstance(x, Tensor) and (type(x) is not Tensor or (grad and x.requires_grad)):
            return op(*args, **kwargs)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args, **kwargs)


def _rows(rewards: Tensor) -> int:
    return rewards.shape[0] if rewards.dim() > 0 else 1  # 0-d: the op names the bad argument


def _lambdas(n_rows, lam, lam_inner, lam_critic):
    lam_f, lam_rows = _per_row(lam, n_rows)
    inner_f, inner_rows = _per_row(lam_inner, n_rows)
    critic_f, critic_rows = _per_row(lam_critic, n_rows)
    return (float(lam_f), float(inner_f),
            dict(lam_rows=lam_rows, lam_inner_rows=inner_rows,
                 lam_critic=None if critic_f is None or critic_rows is not None else float(critic_f),
                 lam_critic_rows=critic_rows))


def advantages(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    mask: Optional[Tensor],
    *,
    lam: Lam,
    gamma: float = 1.0,
    lam_inner: Lam = 1.0,
    threshold: float = 0.2,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
    out: Optional[Tuple[Tensor, Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """Segmental Advantage Estimation: advantages and returns for PPO.

    Args:
        rewards: [B, T] token rewards (RLVR: the verifiable reward on the last token).
        values: [B, T] critic values V(s_t), the value before token t is generated.
        logprobs: [B, T] log-probability of each sampled token under the policy that
            sampled it; a valid token with logprob < log(threshold) starts a new segment.
        mask: [B, T] nonzero on action tokens (bool, integer or float); None: all valid.
        lam: lambda applied where a new segment starts: a float, or a [B] tensor (one per row,
            e.g. :func:`length_adaptive_lam`), any float dtype, on the inputs' device.
        gamma: discount.
        lam_inner: lambda inside a segment (1 for SAE; ``lam_inner == lam`` is plain GAE),
            a float or a [B] tensor.
        threshold: probability p below which a sampled token cuts a segment (paper: 0.2).
        bootstrap: optional [B] value after each row's last valid token (truncated rows).
        lam_critic: None, a float or a [B] tensor: ``returns`` are then the critic's targets
            from plain GAE with this lambda at every token (VAPO's decoupled lambda; 1.0 with
            gamma 1 is Monte Carlo), computed in the same pass; ``advantages`` are unchanged.
            None: ``returns = advantages + values``.
        out: optional preallocated ``(advantages, returns)`` to write into (contiguous, the
            inputs' shape, float32 or float64 as the op would return); not differentiable.

    Returns:
        ``(advantages, returns)``, [B, T] float32 (float64 if any float input is float64),
        contiguous, zero at masked positions. Not whitened: see :func:`masked_whiten`.

    The op checks shapes, dtypes and devices, and on CPU the per-row lambdas' values:
    :func:`check_inputs` catches probabilities passed as ``logprobs``, NaNs and infinities.
    """
    lam_f, inner_f, var = _lambdas(_rows(rewards), lam, lam_inner, lam_critic)
    if out is not None:
        return torch.ops.sae.advantages.out(
            rewards, values, logprobs, mask, gamma, lam_f, inner_f, threshold, bootstrap, **var,
            out_advantages=out[0], out_returns=out[1])
    return _call(torch.ops.sae.advantages,
                 rewards, values, logprobs, mask, gamma, lam_f, inner_f, threshold, bootstrap, **var)


def advantages_from_boundaries(
    rewards: Tensor,
    values: Tensor,
    boundaries: Tensor,
    mask: Optional[Tensor],
    *,
    lam: Lam,
    gamma: float = 1.0,
    lam_inner: Lam = 1.0,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
) -> Tuple[Tensor, Tensor]:
    """Like :func:`advantages`, with segment starts given as a bool [B, T] tensor (your own
    segmentation: fixed length, every k-th token, line breaks...). Boundaries on masked
    positions are ignored."""
    lam_f, inner_f, var = _lambdas(_rows(rewards), lam, lam_inner, lam_critic)
    return _call(torch.ops.sae.advantages_from_boundaries,
                 rewards, values, boundaries, mask, gamma, lam_f, inner_f, bootstrap, **var)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Optional[Tensor],
    *,
    gamma: float = 1.0,
    lam: Lam = 0.95,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
) -> Tuple[Tensor, Tensor]:
    """Plain GAE (one lambda everywhere) with masked tokens skipped; fused, no Python loop.

    Reads rewards, values and mask only. ``lam`` and ``lam_critic`` as in :func:`advantages`.
    Returns ``(advantages, returns)`` as :func:`advantages` does.
    """
    lam_f, _, var = _lambdas(_rows(rewards), lam, lam, lam_critic)
    return _call(torch.ops.sae.advantages, rewards, values, None, mask, gamma, lam_f, lam_f, 0.0,
                 bootstrap, **var)


def length_adaptive_lam(mask: Tensor, alpha: float = 0.05) -> Tensor:
    """VAPO's length-adaptive lambda, one per row: ``1 - 1 / (alpha * l)`` with ``l`` the row's
    number of valid tokens (``mask != 0``), clamped to [0, 1]; rows with ``alpha * l <= 1``
    (short rows, and empty ones) get 0. ``mask``: [B, T]; returns float32 [B] on its device."""
    if mask.dim() != 2:
        raise ValueError(f"length_adaptive_lam: `mask` must be 2-D [B, T], got shape "
                         f"{tuple(mask.shape)}")
    if not alpha > 0:
        raise ValueError(f"length_adaptive_lam: `alpha` must be > 0, got {alpha}")
    scaled = (mask != 0).sum(dim=1, dtype=torch.float64) * alpha
    lam = torch.where(scaled > 1, 1 - 1 / scaled.clamp(min=1), torch.zeros_like(scaled))
    return lam.clamp(0.0, 1.0).to(torch.float32)


def _check_cu_values(cu_seqlens: Tensor, n: int, op: str) -> None:
    """The CPU launcher checks cu_seqlens' values where they are free to read; on a GPU that
    costs a sync, done here once (skipped inside torch.compile, where the kernel's clamping
    still keeps every access in bounds)."""
    if cu_seqlens.device.type in ("cpu", "meta") or torch.compiler.is_compiling():
        return
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() == 0:
        return  # the op's own shape check reports it
    first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
    if first != 0:
        raise RuntimeError(f"{op}: `cu_seqlens` must start at 0, got {first}")
    if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise RuntimeError(f"{op}: `cu_seqlens` must be non-decreasing")
    if last != n:
        raise RuntimeError(f"{op}: `cu_seqlens` must end at N = {n} (the length of `rewards`), "
                           f"got {last}")


def advantages_varlen(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    cu_seqlens: Tensor,
    *,
    mask: Optional[Tensor] = None,
    gamma: float = 1.0,
    lam: Lam,
    lam_inner: Lam = 1.0,
    threshold: float = 0.2,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
) -> Tuple[Tensor, Tensor]:
    """:func:`advantages` on packed rows: 1-D [N] inputs, row b being
    ``x[cu_seqlens[b]:cu_seqlens[b + 1]]`` (flash-attention's convention: int32 or int64
    [B + 1], starting at 0, non-decreasing, ending at N). Returns [N] outputs; each row equals
    the padded op on that row. ``mask`` None: every token valid. Per-row lambdas are [B]."""
    _check_cu_values(cu_seqlens, rewards.shape[0], "sae.advantages")
    lam_f, inner_f, var = _lambdas(max(_rows(cu_seqlens) - 1, 0), lam, lam_inner, lam_critic)
    return _call(torch.ops.sae.advantages, rewards, values, logprobs, mask, gamma, lam_f, inner_f,
                 threshold, bootstrap, **var, cu_seqlens=cu_seqlens)


def gae_varlen(
    rewards: Tensor,
    values: Tensor,
    cu_seqlens: Tensor,
    *,
    mask: Optional[Tensor] = None,
    gamma: float = 1.0,
    lam: Lam = 0.95,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
) -> Tuple[Tensor, Tensor]:
    """:func:`gae` on packed rows, as :func:`advantages_varlen` lays them out."""
    _check_cu_values(cu_seqlens, rewards.shape[0], "sae.advantages")
    lam_f, _, var = _lambdas(max(_rows(cu_seqlens) - 1, 0), lam, lam, lam_critic)
    return _call(torch.ops.sae.advantages, rewards, values, None, mask, gamma, lam_f, lam_f, 0.0,
                 bootstrap, **var, cu_seqlens=cu_seqlens)


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
