"""AReaL integration: its token-level GAE, an SAE variant, and its per-sample λ.

Matched against AReaL's main branch (areal-project/AReaL at commit cbff54d, package version
2.0.0, after the v2.0.0 tag), ``areal/trainer/ppo/gae.py::_compute_token_level_gae`` and
``areal/trainer/ppo/lambda_fn.py``; and against the ``areal`` package on PyPI (1.0.4), whose
``PPOActor._compute_advantages`` runs the same loop inline with a float λ.

AReaL's conventions, which the functions here keep:

- Tensors are ``[B, T]`` over the whole sequence (prompt and response). ``loss_mask`` has
  already been rolled left by one (``_compute_advantages`` does it), so position ``t`` is the
  state that emits token ``t + 1``; ``logprobs`` must be rolled the same way (AReaL's
  ``old_logp``).
- Masked positions are skipped: the value and the advantage are carried across them.
- The last position is never a step: AReaL's loop starts at ``T - 2``, and ``values[:, -1]``
  times ``seq_no_eos_mask`` (True for a row that filled the whole length without EOS, i.e.
  truncated) is the value after the last step: truncated rows bootstrap from it.

Outputs equal AReaL's on every position of ``loss_mask`` (the positions its actor and critic
losses read). Elsewhere AReaL leaves the carried advantage (and carried advantage + value as
the return); here both are 0.

Per-sample λ (AReaL's ``gae_lambda`` given as a function path: constant,
``vapo_length_adaptive_gae``, ``relative_position_gae_lambda``): pass the ``[B]`` λ tensor as
``gae_lambda`` to :func:`compute_token_level_gae` / :func:`compute_token_level_sae`; it goes
straight to the ops' per-row λ (one pass, no loop over rows).

Turn-level GAE (``gae_timestep_unit="turn"``) is not covered.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
from torch import Tensor
from torch.nn import functional as F

import sae_ext

__all__ = [
    "TESTED_AREAL_COMMIT",
    "TESTED_AREAL_PYPI_VERSION",
    "compute_token_level_gae",
    "compute_token_level_sae",
    "relative_position_lam",
    "vapo_length_adaptive_lam",
]

#: The AReaL source the functions were written against (areal-project/AReaL, main).
TESTED_AREAL_COMMIT = "cbff54d645d2cd8ee1f1c358a82f3f473588433d"
#: The PyPI release the tests import (its GAE loop is inline in PPOActor._compute_advantages).
TESTED_AREAL_PYPI_VERSION = "1.0.4"


def _split_last(rewards: Tensor, values: Tensor, loss_mask: Tensor, seq_no_eos_mask: Tensor):
    """AReaL's steps are positions 0..T-2; the last value, on truncated rows, bootstraps."""
    if rewards.dim() != 2:
        raise ValueError(f"AReaL GAE: `rewards` must be [B, T], got {tuple(rewards.shape)}")
    if rewards.shape[-1] < 2:
        raise ValueError("AReaL GAE: sequences need at least 2 positions (the last one only "
                         f"bootstraps), got T={rewards.shape[-1]}")
    if seq_no_eos_mask.shape != rewards.shape[:1]:
        raise ValueError(f"AReaL GAE: `seq_no_eos_mask` must be [B]={tuple(rewards.shape[:1])}, "
                         f"got {tuple(seq_no_eos_mask.shape)}")
    bootstrap = values[:, -1] * seq_no_eos_mask.to(values.dtype)
    return rewards[:, :-1], values[:, :-1], loss_mask[:, :-1], bootstrap


def _pad_last(adv: Tensor, ret: Tensor) -> Tuple[Tensor, Tensor]:
    return F.pad(adv, (0, 1)), F.pad(ret, (0, 1))


def _lam(x):
    """A float, or AReaL's per-sample λ (a [B] tensor) for the ops' per-row λ."""
    return x if isinstance(x, Tensor) else float(x)


@torch.no_grad()
def compute_token_level_gae(
    rewards: Tensor,
    values: Tensor,
    loss_mask: Tensor,
    seq_no_eos_mask: Tensor,
    discount: float,
    gae_lambda: Union[float, Tensor],
) -> Tuple[Tensor, Tensor]:
    """Drop-in for AReaL's ``_compute_token_level_gae``.

    Args:
        rewards, values: [B, T] (AReaL's KL-shaped rewards with the outcome reward added,
            and the critic's values).
        loss_mask: [B, T], rolled left by one as AReaL's actor does; bool, integer or float.
        seq_no_eos_mask: [B] bool, True on rows truncated without EOS.
        discount: γ.
        gae_lambda: λ, a float or AReaL's per-sample λ (the [B] tensor its ``gae_lambda``
            function returns, e.g. :func:`vapo_length_adaptive_lam`).

    Returns:
        ``(advantages, returns)``, not normalized (AReaL's ``adv_norm`` runs afterwards).
    """
    r, v, m, boot = _split_last(rewards, values, loss_mask, seq_no_eos_mask)
    adv, ret = sae_ext.gae(r, v, m, gamma=float(discount), lam=_lam(gae_lambda), bootstrap=boot)
    return _pad_last(adv, ret)


@torch.no_grad()
def compute_token_level_sae(
    rewards: Tensor,
    values: Tensor,
    loss_mask: Tensor,
    seq_no_eos_mask: Tensor,
    logprobs: Tensor,
    discount: float,
    gae_lambda: Union[float, Tensor],
    *,
    lam_inner: Union[float, Tensor] = 1.0,
    threshold: float = 0.2,
) -> Tuple[Tensor, Tensor]:
    """SAE in AReaL's conventions: :func:`compute_token_level_gae` plus the sampled tokens'
    log-probs, rolled like ``loss_mask`` (AReaL's ``old_logp``). ``gae_lambda`` (a float or
    a [B] tensor) applies where a segment starts (a valid token with log-prob below
    ``log(threshold)``), ``lam_inner`` elsewhere."""
    r, v, m, boot = _split_last(rewards, values, loss_mask, seq_no_eos_mask)
    adv, ret = sae_ext.advantages(r, v, logprobs[:, :-1], m, lam=_lam(gae_lambda),
                                  gamma=float(discount), lam_inner=_lam(lam_inner),
                                  threshold=float(threshold), bootstrap=boot)
    return _pad_last(adv, ret)


def vapo_length_adaptive_lam(loss_mask: Tensor, alpha: float) -> Tensor:
    """AReaL's ``vapo_length_adaptive_gae`` on token-level lengths (the loss-mask count of
    each row): ``1 - 1 / (alpha * L)``, clamped at 0; 0 for empty rows."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return sae_ext.length_adaptive_lam(loss_mask, alpha=float(alpha))


def relative_position_lam(loss_mask: Tensor, q: float) -> Tensor:
    """AReaL's ``relative_position_gae_lambda`` on token-level lengths: ``q ** (1 / (L - 1))``
    for L >= 2, 1 for L = 1, 0 for empty rows, so a terminal reward keeps the fraction ``q``
    at the first token of every row whatever its length."""
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) \
            or not 0 < q <= 1:
        raise ValueError(f"q must be a finite number in (0, 1], got {q!r}")
    lengths = (loss_mask != 0).sum(dim=-1)
    steps = (lengths - 1).clamp_min(1).to(torch.float32)
    lam = torch.exp(math.log(float(q)) / steps)
    return torch.where(lengths > 1, lam, (lengths == 1).to(torch.float32))
