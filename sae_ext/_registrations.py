"""Fake (meta) kernels and autograd for the sae ops, so they trace under torch.compile and
differentiate. Advantages and returns are linear in rewards, values and bootstrap; their
adjoint is the same recursion run forward in time (csrc/sae_step.h), a compiled op too.
"""
from __future__ import annotations

import torch

from . import _validation

_F64 = torch.float64


def _acc_dtype(*tensors) -> torch.dtype:
    return _F64 if any(t is not None and t.dtype == _F64 for t in tensors) else torch.float32


# The fake kernels are also the ops' Meta kernels, which the dispatcher picks whenever any
# argument is on the meta device; so they check what the C++ launchers check, with the same
# messages (sae_ext/_validation.py), rather than return a tensor for inputs the real kernels
# reject.
def _fake_forward(op, rewards, values, cut, mask, bootstrap, cut_is_logprobs, gamma, lam, lam_inner,
                  threshold=0.0):
    _validation.check_forward(op, rewards, values, cut, cut_is_logprobs, mask, bootstrap,
                              gamma, lam, lam_inner, threshold)
    dt = _acc_dtype(rewards, values, cut if cut_is_logprobs else None, bootstrap)
    return rewards.new_empty(rewards.shape, dtype=dt), rewards.new_empty(rewards.shape, dtype=dt)


@torch.library.register_fake("sae::advantages")
def _advantages_fake(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold,
                     bootstrap=None):
    return _fake_forward("sae.advantages", rewards, values, logprobs, mask, bootstrap, True,
                         gamma=gamma, lam=lam, lam_inner=lam_inner, threshold=threshold)


@torch.library.register_fake("sae::advantages_from_boundaries")
def _advantages_from_boundaries_fake(rewards, values, boundaries, mask, gamma, lam, lam_inner,
                                     bootstrap=None):
    return _fake_forward("sae.advantages_from_boundaries", rewards, values, boundaries, mask,
                         bootstrap, False, gamma=gamma, lam=lam, lam_inner=lam_inner)


@torch.library.register_fake("sae::segment_boundaries")
def _segment_boundaries_fake(logprobs, mask, threshold):
    _validation.check_segmentation("sae.segment_boundaries", logprobs, mask, threshold)
    return logprobs.new_empty(logprobs.shape, dtype=torch.bool)


@torch.library.register_fake("sae::advantages_backward")
def _advantages_backward_fake(grad_advantages, grad_returns, mask, logprobs, boundaries, gamma,
                              lam, lam_inner, threshold):
    _validation.check_adjoint("sae.advantages_backward", grad_advantages, grad_returns, mask,
                              logprobs, boundaries, gamma, lam, lam_inner, threshold)
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


# The adjoint pass is itself linear in (grad_advantages, grad_returns); its adjoint is the
# forward recursion again, which gives double backward (e.g. gradgradcheck, Hessian-vector
# products through a loss on the advantages) for free.
def _setup_backward(ctx, inputs, output):
    grad_advantages, grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner, threshold = inputs
    ctx.save_for_backward(mask, logprobs, boundaries)
    ctx.hyper = (gamma, lam, lam_inner, threshold)
    ctx.grad_dtypes = tuple(None if g is None else g.dtype for g in (grad_advantages, grad_returns))


def _backward_backward(ctx, h_rewards, h_values, h_bootstrap):
    mask, logprobs, boundaries = ctx.saved_tensors
    gamma, lam, lam_inner, threshold = ctx.hyper
    like = h_rewards if h_rewards is not None else h_values
    if like is None:
        like = mask.new_zeros(mask.shape, dtype=torch.float32)
    h_rewards = torch.zeros_like(like) if h_rewards is None else h_rewards
    h_values = torch.zeros_like(like) if h_values is None else h_values
    if logprobs is not None:
        adv, ret = torch.ops.sae.advantages(h_rewards, h_values, logprobs, mask, gamma, lam, lam_inner,
                                            threshold, h_bootstrap)
    else:
        adv, ret = torch.ops.sae.advantages_from_boundaries(h_rewards, h_values, boundaries, mask, gamma,
                                                            lam, lam_inner, h_bootstrap)
    ga_dt, gr_dt = ctx.grad_dtypes
    return (None if ga_dt is None else adv.to(ga_dt), None if gr_dt is None else ret.to(gr_dt),
            None, None, None, None, None, None, None)


torch.library.register_autograd("sae::advantages_backward", _backward_backward,
                                setup_context=_setup_backward)
