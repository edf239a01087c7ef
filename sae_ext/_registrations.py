"""Fake (meta) kernels and autograd for the sae ops, so they trace under torch.compile and
differentiate. Advantages and returns are linear in rewards, values and bootstrap; their
adjoint is the same recursion run forward in time (csrc/sae_step.h), a compiled op too.

Hyperparameters (gamma, the lambdas, per-row lambda tensors, cu_seqlens) get no gradient.
"""
from __future__ import annotations

import torch

from . import _validation


# The fake kernels are also the ops' Meta kernels, which the dispatcher picks whenever any
# argument is on the meta device; so they check what the C++ launchers check, with the same
# messages (sae_ext/_validation.py), rather than return a tensor for inputs the real kernels
# reject.
def _fake_forward(op, rewards, values, cut, mask, bootstrap, cut_is_logprobs, gamma, lam, lam_inner,
                  threshold, lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens,
                  out_advantages=None, out_returns=None):
    dt = _validation.check_forward(op, rewards, values, cut, cut_is_logprobs, mask, bootstrap,
                                   gamma, lam, lam_inner, threshold, lam_rows, lam_inner_rows,
                                   lam_critic, lam_critic_rows, cu_seqlens, out_advantages,
                                   out_returns)
    return rewards.new_empty(rewards.shape, dtype=dt), rewards.new_empty(rewards.shape, dtype=dt)


@torch.library.register_fake("sae::advantages")
def _advantages_fake(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold,
                     bootstrap=None, lam_rows=None, lam_inner_rows=None, lam_critic=None,
                     lam_critic_rows=None, cu_seqlens=None):
    return _fake_forward("sae.advantages", rewards, values, logprobs, mask, bootstrap, True,
                         gamma, lam, lam_inner, threshold, lam_rows, lam_inner_rows, lam_critic,
                         lam_critic_rows, cu_seqlens)


@torch.library.register_fake("sae::advantages.out")
def _advantages_out_fake(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold,
                         bootstrap=None, lam_rows=None, lam_inner_rows=None, lam_critic=None,
                         lam_critic_rows=None, cu_seqlens=None, *, out_advantages, out_returns):
    _fake_forward("sae.advantages.out", rewards, values, logprobs, mask, bootstrap, True, gamma,
                  lam, lam_inner, threshold, lam_rows, lam_inner_rows, lam_critic,
                  lam_critic_rows, cu_seqlens, out_advantages, out_returns)
    return out_advantages, out_returns


@torch.library.register_fake("sae::advantages_from_boundaries")
def _advantages_from_boundaries_fake(rewards, values, boundaries, mask, gamma, lam, lam_inner,
                                     bootstrap=None, lam_rows=None, lam_inner_rows=None,
                                     lam_critic=None, lam_critic_rows=None, cu_seqlens=None):
    return _fake_forward("sae.advantages_from_boundaries", rewards, values, boundaries, mask,
                         bootstrap, False, gamma, lam, lam_inner, 0.0, lam_rows, lam_inner_rows,
                         lam_critic, lam_critic_rows, cu_seqlens)


@torch.library.register_fake("sae::segment_boundaries")
def _segment_boundaries_fake(logprobs, mask, threshold):
    _validation.check_segmentation("sae.segment_boundaries", logprobs, mask, threshold)
    return logprobs.new_empty(logprobs.shape, dtype=torch.bool)


@torch.library.register_fake("sae::advantages_backward")
def _advantages_backward_fake(grad_advantages, grad_returns, mask, logprobs, boundaries, gamma,
                              lam, lam_inner, threshold, lam_rows=None, lam_inner_rows=None,
                              cu_seqlens=None):
    B = _validation.check_adjoint("sae.advantages_backward", grad_advantages, grad_returns, mask,
                                  logprobs, boundaries, gamma, lam, lam_inner, threshold,
                                  lam_rows, lam_inner_rows, cu_seqlens)
    dt = _validation.accumulation_dtype(grad_advantages, grad_returns)
    return (mask.new_empty(mask.shape, dtype=dt), mask.new_empty(mask.shape, dtype=dt),
            mask.new_empty((B,), dtype=dt))


# Autograd of the two forward ops. -------------------------------------------------------------
_FORWARD_TAIL = ("bootstrap", "lam_rows", "lam_inner_rows", "lam_critic", "lam_critic_rows",
                 "cu_seqlens")


def _setup(ctx, cut_is_logprobs, rewards, values, cut, mask, gamma, lam, lam_inner, threshold,
           tail):
    kw = dict(zip(_FORWARD_TAIL, tail + (None,) * (len(_FORWARD_TAIL) - len(tail))))
    bootstrap = kw["bootstrap"]
    if mask is None:  # the adjoint op needs a mask: every token valid
        mask = torch.ones(rewards.shape, dtype=torch.bool, device=rewards.device)
    ctx.save_for_backward(cut, mask, kw["lam_rows"], kw["lam_inner_rows"], kw["lam_critic_rows"],
                          kw["cu_seqlens"])
    ctx.cut_is_logprobs = cut_is_logprobs
    ctx.hyper = (gamma, lam, lam_inner, threshold)
    ctx.lam_critic = kw["lam_critic"]
    ctx.critic = kw["lam_critic"] is not None or kw["lam_critic_rows"] is not None
    ctx.dtypes = (rewards.dtype, values.dtype, None if bootstrap is None else bootstrap.dtype)


def _backward(ctx, grad_advantages, grad_returns):
    cut, mask, lam_rows, lam_inner_rows, lam_critic_rows, cu = ctx.saved_tensors
    logprobs, boundaries = (cut, None) if ctx.cut_is_logprobs else (None, cut)
    bw = torch.ops.sae.advantages_backward
    if not ctx.critic:
        gr, gv, gb = bw(grad_advantages, grad_returns, mask, logprobs, boundaries, *ctx.hyper,
                        lam_rows, lam_inner_rows, cu)
    else:
        # Advantages and returns come from two chains: the SAE one and the critic one (lambda =
        # lam_critic everywhere, no cuts); the gradient is the sum of their adjoints.
        gamma = ctx.hyper[0]
        lc = 1.0 if ctx.lam_critic is None else ctx.lam_critic
        gr, gv, gb = bw(grad_advantages, None, mask, logprobs, boundaries, *ctx.hyper, lam_rows,
                        lam_inner_rows, cu)
        cr, cv, cb = bw(None, grad_returns, mask, None, None, gamma, lc, lc, 0.0,
                        lam_critic_rows, lam_critic_rows, cu)
        gr, gv, gb = gr + cr, gv + cv, gb + cb
    r_dt, v_dt, b_dt = ctx.dtypes
    return gr.to(r_dt), gv.to(v_dt), (None if b_dt is None else gb.to(b_dt))


def _setup_advantages(ctx, inputs, output):
    rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, *tail = inputs
    _setup(ctx, True, rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, tuple(tail))


def _setup_from_boundaries(ctx, inputs, output):
    rewards, values, boundaries, mask, gamma, lam, lam_inner, *tail = inputs
    _setup(ctx, False, rewards, values, boundaries, mask, gamma, lam, lam_inner, 0.0, tuple(tail))


_NO_GRAD_TAIL = (None,) * (len(_FORWARD_TAIL) - 1)  # lam_rows .. cu_seqlens


def _backward_advantages(ctx, grad_advantages, grad_returns):
    gr, gv, gb = _backward(ctx, grad_advantages, grad_returns)
    return (gr, gv, None, None, None, None, None, None, gb) + _NO_GRAD_TAIL


def _backward_from_boundaries(ctx, grad_advantages, grad_returns):
    gr, gv, gb = _backward(ctx, grad_advantages, grad_returns)
    return (gr, gv, None, None, None, None, None, gb) + _NO_GRAD_TAIL


torch.library.register_autograd("sae::advantages", _backward_advantages,
                                setup_context=_setup_advantages)
torch.library.register_autograd("sae::advantages_from_boundaries", _backward_from_boundaries,
                                setup_context=_setup_from_boundaries)


# The adjoint pass is itself linear in (grad_advantages, grad_returns); its adjoint is the
# forward recursion again, which gives double backward (e.g. gradgradcheck, Hessian-vector
# products through a loss on the advantages) for free.
def _setup_backward(ctx, inputs, output):
    (grad_advantages, grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner, threshold,
     *tail) = inputs
    lam_rows, lam_inner_rows, cu = tuple(tail) + (None,) * (3 - len(tail))
    ctx.save_for_backward(mask, logprobs, boundaries, lam_rows, lam_inner_rows, cu)
    ctx.hyper = (gamma, lam, lam_inner, threshold)
    ctx.grad_dtypes = tuple(None if g is None else g.dtype for g in (grad_advantages, grad_returns))


def _backward_backward(ctx, h_rewards, h_values, h_bootstrap):
    mask, logprobs, boundaries, lam_rows, lam_inner_rows, cu = ctx.saved_tensors
    gamma, lam, lam_inner, threshold = ctx.hyper
    like = h_rewards if h_rewards is not None else h_values
    if like is None:
        like = mask.new_zeros(mask.shape, dtype=torch.float32)
    h_rewards = torch.zeros_like(like) if h_rewards is None else h_rewards
    h_values = torch.zeros_like(like) if h_values is None else h_values
    variants = dict(lam_rows=lam_rows, lam_inner_rows=lam_inner_rows, cu_seqlens=cu)
    if boundaries is None:
        adv, ret = torch.ops.sae.advantages(h_rewards, h_values, logprobs, mask, gamma, lam,
                                            lam_inner, threshold, h_bootstrap, **variants)
    else:
        adv, ret = torch.ops.sae.advantages_from_boundaries(
            h_rewards, h_values, boundaries, mask, gamma, lam, lam_inner, h_bootstrap, **variants)
    ga_dt, gr_dt = ctx.grad_dtypes
    return (None if ga_dt is None else adv.to(ga_dt), None if gr_dt is None else ret.to(gr_dt),
            None, None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("sae::advantages_backward", _backward_backward,
                                setup_context=_setup_backward)
