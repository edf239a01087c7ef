"""TRL integration: the advantage step of TRL's PPO trainer, and its SAE variant.

TRL (checked on main, 1.10.0.dev0, where the trainer is ``trl.experimental.ppo.PPOTrainer``;
older releases have the same step in ``trl.trainer.ppo_trainer``) has no advantage function:
inside ``train()`` it runs GAE over the whole response length as a Python loop, then whitens
the advantages over the response tokens and zeroes them on padding. Its conventions, which
the functions here take as they are:

- masks are *padding* masks, True on padding. ``padding_mask`` is True after the last
  response token L; ``padding_mask_p1`` is True after L + 1. TRL keeps the critic's value at
  L + 1 (the state after the last token) and, when the row has room, puts the score on L + 1
  rather than on L; ``values`` are zeroed where ``padding_mask_p1`` is True, and the KL part
  of ``rewards`` is 0 on padding (TRL fills padding log-probs with the same constant for the
  policy and the reference).
- the loop skips nothing: it runs through every position. Since values and rewards are 0
  beyond L + 1, that equals running over the positions where ``padding_mask_p1`` is False and
  stopping there, which is what these functions do (mask = ``~padding_mask_p1``). A mask with
  holes (not a TRL layout) would be skipped over, per the sae-ext contract.
- advantages are whitened with the mean and *unbiased* variance over ``~padding_mask`` (L + 1
  excluded), ``(x - mean) * rsqrt(var + 1e-8)``, then set to 0 where ``padding_mask``;
  returns = raw advantages + values, not whitened (nonzero at L + 1, which the value loss
  uses; 0 beyond).

With these, the results equal TRL's at every position. Neither function needs TRL installed.
See docs/integrations.md.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

import sae_ext

__all__ = ["compute_advantages_and_returns", "compute_sae_advantages_and_returns"]


def _valid(padding_mask: Tensor) -> Tensor:
    return padding_mask == 0


def _finish(adv: Tensor, padding_mask: Tensor, whiten_advantages: bool) -> Tensor:
    tokens = _valid(padding_mask)
    if whiten_advantages:
        return sae_ext.masked_whiten(adv, tokens, unbiased=True, shift_mean=True, eps=1e-8)
    return adv.masked_fill(~tokens, 0.0)


@torch.no_grad()
def compute_advantages_and_returns(
    rewards: Tensor,
    values: Tensor,
    padding_mask: Tensor,
    padding_mask_p1: Tensor,
    gamma: float,
    lam: float,
    *,
    whiten_advantages: bool = True,
) -> Tuple[Tensor, Tensor]:
    """TRL's PPO step "compute advantages and returns" (GAE, then whitening), fused.

    Args:
        rewards: [B, T] TRL's ``rewards`` (KL penalty plus the score, after its optional
            reward whitening).
        values: [B, T] TRL's ``values`` (zeroed where ``padding_mask_p1``).
        padding_mask: [B, T] True after the last response token.
        padding_mask_p1: [B, T] True after the position following it.
        gamma, lam: ``args.gamma``, ``args.lam``.
        whiten_advantages: whiten as TRL does (default); False only zeroes the padding.

    Returns:
        ``(advantages, returns)`` as TRL computes them; float32 (float64 for float64 inputs).
    """
    adv, ret = sae_ext.gae(rewards, values, _valid(padding_mask_p1),
                           gamma=float(gamma), lam=float(lam))
    return _finish(adv, padding_mask, whiten_advantages), ret


@torch.no_grad()
def compute_sae_advantages_and_returns(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    padding_mask: Tensor,
    padding_mask_p1: Tensor,
    gamma: float,
    lam: float,
    *,
    threshold: float = 0.2,
    lam_inner: float = 1.0,
    whiten_advantages: bool = True,
) -> Tuple[Tensor, Tensor]:
    """SAE in TRL's conventions: :func:`compute_advantages_and_returns` plus TRL's
    ``logprobs`` [B, T], the log-probs of the sampled response tokens under the sampling
    policy (from the generation logits, temperature applied). A response token (``padding_mask``
    False) whose log-prob is below ``log(threshold)`` starts a new segment; ``lam`` applies
    across a transition into a segment start and ``lam_inner`` elsewhere. The step at L + 1
    is never a segment start, whatever log-prob sits there.
    """
    boundaries = sae_ext.segment_boundaries(logprobs, _valid(padding_mask),
                                            threshold=float(threshold))
    adv, ret = sae_ext.advantages_from_boundaries(
        rewards, values, boundaries, _valid(padding_mask_p1),
        lam=float(lam), gamma=float(gamma), lam_inner=float(lam_inner))
    return _finish(adv, padding_mask, whiten_advantages), ret
