"""Fake (meta) kernels and autograd for the sae ops, so they trace under torch.compile and
differentiate. Advantages and returns are linear in rewards, values and bootstrap; their
adjoint is the same recursion run forward in time (csrc/sae_step.h), a compiled op too.
"""
from __future__ import annotations

import torch

_F64 = torch.float64


def _acc_dtype(*tensors) -> torch.dtype:
    return _F64 if any(t is not None and t.dtype == _F64 for t in tensors) else torch.float32


def _fake_forward(rewards, values, cut, bootstrap, cut_is_logprobs):
    torch._check(rewards.dim() == 2, lambda: "sae: `rewards` must be 2-D [B, T]")
    torch._check(values.shape == rewards.shape, lambda: "sae: `values` must match `rewards`")
    torch._check(cut.shape == rewards.shape, lambda: "sae: logprobs/boundaries must match `rewards`")
    dt = _acc_dtype(rewards, values, cut if cut_is_logprobs else None, bootstrap)
    return rewards.new_empty(rewards.shape, dtype=dt), rewards.new_empty(rewards.shape, dtype=dt)


@torch.library.register_fake("sae::advantages")
def _advantages_fake(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold,
                     bootstrap=None):
    return _fake_forward(rewards, values, logprobs, bootstrap, True)


@torch.library.register_fake("sae::advantages_from_boundaries")
def _advantages_from_boundaries_fake(rewards, values, boundaries, mask, gamma, lam, lam_inner,
                                     bootstrap=None):
    return _fake_forward(rewards, values, boundaries, bootstrap, False)


@torch.library.register_fake("sae::segment_boundaries")
def _segment_boundaries_fake(logprobs, mask, threshold):
    return logprobs.new_empty(logprobs.shape, dtype=torch.bool)


@torch.library.register_fake("sae::advantages_backward")
def _advantages_backward_fake(grad_advantages, grad_returns, mask, logprobs, boundaries, gamma,
                              lam, lam_inner, threshold):
    dt = _acc_dtype(grad_advantages, grad_returns)
    B, T = mask.shape
    return mask.new_empty((B, T), dtype=dt), mask.new_empty((B, T), dtype=dt), mask.new_empty((B,), dtype=dt)


def _setup(ctx, cut_is_logprobs, rewards, values, cut, mask, gamma, lam, lam_inner, threshold,
           bootstrap):
    ctx.save_for_backward(cut, mask)
    ctx.cut_is_logprobs = cut_is_logprobs
    ctx.hyper = (gamma, lam, lam_inner, threshold)
    ctx.dtypes = (rewards.dtype, values.dtype, None if bootstrap is None else bootstrap.dtype)


def _backward(ctx, grad_advantages, grad_returns):
    cut, mask = ctx.saved_tensors
    logprobs, boundaries = (cut, None) if ctx.cut_is_logprobs else (None, cut)
    gr, gv, gb = torch.ops.sae.advantages_backward(
        grad_advantages, grad_returns, mask, logprobs, boundaries, *ctx.hyper)
    r_dt, v_dt, b_dt = ctx.dtypes
    return gr.to(r_dt), gv.to(v_dt), (None if b_dt is None else gb.to(b_dt))


def _setup_advantages(ctx, inputs, output):
    rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, *rest = inputs
    bootstrap = rest[0] if rest else None
    _setup(ctx, True, rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, bootstrap)


def _setup_from_boundaries(ctx, inputs, output):
    rewards, values, boundaries, mask, gamma, lam, lam_inner, *rest = inputs
    bootstrap = rest[0] if rest else None
    _setup(ctx, False, rewards, values, boundaries, mask, gamma, lam, lam_inner, 0.0, bootstrap)


def _backward_advantages(ctx, grad_advantages, grad_returns):
    gr, gv, gb = _backward(ctx, grad_advantages, grad_returns)
    return gr, gv, None, None, None, None, None, None, gb


def _backward_from_boundaries(ctx, grad_advantages, grad_returns):
    gr, gv, gb = _backward(ctx, grad_advantages, grad_returns)
    return gr, gv, None, None, None, None, None, gb


torch.library.register_autograd("sae::advantages", _backward_advantages,
                                setup_context=_setup_advantages)
torch.library.register_autograd("sae::advantages_from_boundaries", _backward_from_boundaries,
                                setup_context=_setup_from_boundaries)
