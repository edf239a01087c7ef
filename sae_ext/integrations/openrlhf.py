"""OpenRLHF integration: ``get_advantages_and_returns`` and its SAE variant.

OpenRLHF (checked on 0.11.0) computes GAE in ``RemoteExperienceMaker.get_advantages_and_returns(
values, rewards, action_mask, gamma, lambd)``, on [B, A] tensors over the response tokens
(``action_mask`` bool, ``None`` meaning all valid), and returns unwhitened advantages and
returns; it normalizes the advantages afterwards, across all experiences of the step, in
``compute_advantages_and_returns`` (biased variance). The functions here keep those tensor
conventions and leave the normalization to OpenRLHF. Neither needs OpenRLHF installed.

Masks. OpenRLHF multiplies ``values`` and ``rewards`` by ``action_mask`` and then runs the
recursion over every position: a masked position is a step with value 0 and reward 0, not a
skipped one.

- Trailing padding (single-turn rollouts): identical to skipping. Both give the same
  advantages and returns at every position, 0 on the padding.
- Holes, i.e. masked positions between valid tokens (environment-feedback tokens of OpenRLHF's
  multi-turn agent rollouts): OpenRLHF's chain passes through them as zero-valued states, so
  with gamma or lambda below 1 the valid token before a hole sees the next valid token's value
  discounted by an extra gamma * lambda per hole position, and gets nonzero advantages at the
  hole positions (which its losses mask out). The default here, ``holes="skip"``, follows the
  sae-ext contract instead (verl's treatment): holes are skipped, the valid tokens on both
  sides are consecutive steps, holes come out 0. ``holes="openrlhf"`` reproduces OpenRLHF's
  numbers at every position.

See docs/integrations.md.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

import sae_ext

__all__ = ["get_advantages_and_returns", "get_sae_advantages_and_returns"]

_HOLES = ("skip", "openrlhf")


def _prepare(values: Tensor, rewards: Tensor, action_mask: Optional[Tensor], holes: str):
    """Returns (values, rewards, recursion mask, valid-token mask)."""
    if holes not in _HOLES:
        raise ValueError(f"holes must be one of {_HOLES}, got {holes!r}")
    if action_mask is None:
        valid = torch.ones(rewards.shape, dtype=torch.bool, device=rewards.device)
    else:
        valid = action_mask != 0
    if holes == "skip":
        return values, rewards, valid, valid
    # OpenRLHF: zero values and rewards on masked positions, then recurse over all of them.
    keep = valid.to(values.dtype)
    return values * keep, rewards * valid.to(rewards.dtype), torch.ones_like(valid), valid


@torch.no_grad()
def get_advantages_and_returns(
    values: Tensor,
    rewards: Tensor,
    action_mask: Optional[Tensor],
    gamma: float,
    lambd: float,
    *,
    holes: str = "skip",
) -> Tuple[Tensor, Tensor]:
    """GAE with the signature of OpenRLHF's ``get_advantages_and_returns``.

    Args:
        values: [B, A] critic values of the response tokens.
        rewards: [B, A] token rewards (OpenRLHF: the KL penalty plus the reward on the last
            token, from its ``compute_reward``).
        action_mask: [B, A] nonzero on action tokens, or None (all valid).
        gamma, lambd: discount and GAE lambda.
        holes: ``"skip"`` (default, the sae-ext contract) or ``"openrlhf"`` (masked positions
            are zero-valued steps, OpenRLHF's numbers everywhere). Identical on rows whose
            masked positions are all trailing.

    Returns:
        ``(advantages, returns)`` [B, A], float32 (float64 for float64 inputs), not whitened.
        With ``holes="skip"`` both are 0 on masked positions.
    """
    v, r, mask, _ = _prepare(values, rewards, action_mask, holes)
    return sae_ext.gae(r, v, mask, gamma=float(gamma), lam=float(lambd))


@torch.no_grad()
def get_sae_advantages_and_returns(
    values: Tensor,
    rewards: Tensor,
    action_mask: Optional[Tensor],
    action_log_probs: Tensor,
    gamma: float,
    lambd: float,
    *,
    threshold: float = 0.2,
    lambd_inner: float = 1.0,
    holes: str = "skip",
) -> Tuple[Tensor, Tensor]:
    """SAE in OpenRLHF's conventions: :func:`get_advantages_and_returns` plus the log-probs of
    the sampled tokens, [B, A] (OpenRLHF's ``experience.action_log_probs``, the actor's
    log-probs at rollout time, or ``experience.rollout_log_probs`` when the rollout records
    the inference engine's). A valid token whose log-prob is below ``log(threshold)`` starts a
    new segment; ``lambd`` applies across a transition into a segment start and
    ``lambd_inner`` elsewhere. Only valid tokens can start a segment, so the dummy log-probs
    OpenRLHF stores on environment-feedback tokens never matter. ``holes`` as in
    :func:`get_advantages_and_returns`.
    """
    v, r, mask, valid = _prepare(values, rewards, action_mask, holes)
    boundaries = sae_ext.segment_boundaries(action_log_probs, valid, threshold=float(threshold))
    return sae_ext.advantages_from_boundaries(
        r, v, boundaries, mask, lam=float(lambd), gamma=float(gamma),
        lam_inner=float(lambd_inner))
