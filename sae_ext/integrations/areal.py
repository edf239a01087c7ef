"""AReaL integration: its token-level GAE, an SAE variant, its turn-level GAE and its
per-sample λ.

Matched against AReaL's main branch (areal-project/AReaL at commit cbff54d, package version
2.0.0, after the v2.0.0 tag), ``areal/trainer/ppo/gae.py`` (``_compute_token_level_gae``,
``_compute_turn_level_gae``) and ``areal/trainer/ppo/lambda_fn.py``; and against the
``areal`` package on PyPI (1.0.4), whose ``PPOActor._compute_advantages`` runs the
token-level loop inline with a float λ (it has no turn-level GAE).

AReaL's conventions, which the functions here keep:

- Tensors are ``[B, T]`` over the whole sequence (prompt and response). ``loss_mask`` has
  already been rolled left by one (``_compute_advantages`` does it), so position ``t`` is the
  state that emits token ``t + 1``; ``logprobs`` must be rolled the same way (AReaL's
  ``old_logp``).
- Masked positions are skipped: the value and the advantage are carried across them.
- ``values[:, -1]`` times ``seq_no_eos_mask`` (True for a row that filled the whole length
  without EOS, i.e. truncated) is the value after the last step: truncated rows bootstrap
  from it. At token level the last position is never a step (AReaL's loop starts at
  ``T - 2``).

Token-level outputs equal AReaL's on every position of ``loss_mask`` (the positions its actor
and critic losses read). Elsewhere AReaL leaves the carried advantage (and carried advantage +
value as the return); here both are 0.

Per-sample λ (AReaL's ``gae_lambda`` given as a function path: constant,
``vapo_length_adaptive_gae``, ``relative_position_gae_lambda``): pass the ``[B]`` λ tensor as
``gae_lambda`` to :func:`compute_token_level_gae` / :func:`compute_token_level_sae`; it goes
straight to the ops' per-row λ (one pass, no loop over rows).

Turn-level GAE (``gae_timestep_unit="turn"``, each generated turn one timestep, turns given
by the ``turn_ids`` of the rollout): :func:`compute_turn_level_gae`, equal to AReaL's on every
position; its per-sample λ reads turn counts, so pass ``turn_ids`` to the λ functions. AReaL's
actor picks the function by that option, looking both names up in
``areal.trainer.ppo.actor`` when it runs, so assigning the two drop-ins there switches both
units (docs/integrations.md).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import functional as F

import sae_ext

__all__ = [
    "TESTED_AREAL_COMMIT",
    "TESTED_AREAL_PYPI_VERSION",
    "compute_token_level_gae",
    "compute_token_level_sae",
    "compute_turn_level_gae",
    "relative_position_lam",
    "turn_counts",
    "vapo_length_adaptive_lam",
]

#: The AReaL source the functions were written against (areal-project/AReaL, main).
TESTED_AREAL_COMMIT = "cbff54d645d2cd8ee1f1c358a82f3f473588433d"
#: The PyPI release the tests import (its GAE loop is inline in PPOActor._compute_advantages).
TESTED_AREAL_PYPI_VERSION = "1.0.4"


def _check_batch(rewards: Tensor, seq_no_eos_mask: Tensor, min_t: int, why: str) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"AReaL GAE: `rewards` must be [B, T], got {tuple(rewards.shape)}")
    if rewards.shape[-1] < min_t:
        raise ValueError(f"AReaL GAE: sequences need at least {min_t} position"
                         f"{'s' if min_t > 1 else ''} ({why}), got T={rewards.shape[-1]}")
    if seq_no_eos_mask.shape != rewards.shape[:1]:
        raise ValueError(f"AReaL GAE: `seq_no_eos_mask` must be [B]={tuple(rewards.shape[:1])}, "
                         f"got {tuple(seq_no_eos_mask.shape)}")


def _split_last(rewards: Tensor, values: Tensor, loss_mask: Tensor, seq_no_eos_mask: Tensor):
    """AReaL's steps are positions 0..T-2; the last value, on truncated rows, bootstraps."""
    _check_batch(rewards, seq_no_eos_mask, 2, "the last one only bootstraps")
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


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _turn_slots(loss_mask: Tensor, turn_ids: Tensor):
    """Each row's turns as slots indexed by turn id, as AReaL's ``_compute_turn_level_gae``
    lays them out: ``(valid [B, T] bool, ids [B, T] long, first [B, S], turn_valid [B, S])``
    with ``first`` a turn's first ``loss_mask`` position (T where the id has none).

    The rules are AReaL's ``_validate_turn_ids``. The value rules (on ``loss_mask``
    positions: ids >= 0, < T, non-decreasing) are checked on the CPU, where reading them is
    free; on a GPU they are not read (a sync per call; AReaL asserts them on the device),
    and out-of-range ids are clamped so that no access leaves the tensors.
    S is T on a GPU (no sync); on the CPU the largest id in use plus one, as AReaL's CPU loop
    bound is: slots past it hold no turn."""
    if turn_ids.shape != loss_mask.shape:
        raise ValueError(f"AReaL turn-level GAE: `turn_ids` must have the shape of "
                         f"`loss_mask`, {tuple(loss_mask.shape)}, got {tuple(turn_ids.shape)}")
    if turn_ids.device != loss_mask.device:
        raise ValueError(f"AReaL turn-level GAE: `turn_ids` must be on `loss_mask`'s device "
                         f"({loss_mask.device}), got {turn_ids.device}")
    if turn_ids.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"AReaL turn-level GAE: `turn_ids` must have an integer dtype, got "
                         f"{turn_ids.dtype}")
    B, T = loss_mask.shape
    valid = loss_mask != 0
    ids = torch.where(valid, turn_ids.long(), -1)
    if ids.device.type == "cpu":
        if bool((valid & (ids < 0)).any()):
            raise ValueError("AReaL turn-level GAE: `turn_ids` must be >= 0 at every "
                             "`loss_mask` position")
        if bool((ids >= T).any()):
            raise ValueError(f"AReaL turn-level GAE: `turn_ids` must be < T={T} at every "
                             "`loss_mask` position")
        if bool((valid & (ids < torch.cummax(ids, dim=1).values)).any()):
            raise ValueError("AReaL turn-level GAE: `turn_ids` must be non-decreasing along "
                             "each row over the `loss_mask` positions")
        S = int(ids.amax()) + 1 if ids.numel() else 0
    else:
        S = T
    S = max(S, 1)
    ids = ids.clamp(0, S - 1)
    positions = torch.arange(T, device=ids.device).expand(B, T)
    first = torch.full((B, S), T, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(1, ids, torch.where(valid, positions, T), reduce="amin")
    return valid, ids, first, first < T


@torch.no_grad()
def compute_turn_level_gae(
    rewards: Tensor,
    values: Tensor,
    loss_mask: Tensor,
    turn_ids: Tensor,
    seq_no_eos_mask: Tensor,
    discount: float,
    gae_lambda: Union[float, Tensor],
) -> Tuple[Tensor, Tensor]:
    """Drop-in for AReaL's ``_compute_turn_level_gae`` (``gae_timestep_unit="turn"``): GAE
    with each generated turn one timestep.

    A turn is the set of ``loss_mask`` positions sharing a ``turn_id`` (AReaL's actor rolls
    ``turn_ids`` left by one with ``loss_mask`` and sets the last one to -1; prompt and tool
    positions carry -1 and are off the mask). Its reward is the sum of its positions'
    rewards, its value the value at its first position. The turns of a row, in increasing
    id, are the steps of one GAE recursion (γ and λ once per turn; an id no position uses is
    skipped); ``values[:, -1] * seq_no_eos_mask`` is the value after the last turn, so
    truncated rows bootstrap. Every position of a turn gets the turn's advantage, and as
    return the turn's advantage plus the turn's value. Here the turns are scattered into a
    ``[B, S]`` tensor of slots, one ``sae_ext.gae`` call runs the recursion over them, and a
    gather brings the results back: no Python loop over turns or tokens.

    Args:
        rewards, values: [B, T]. In turn mode AReaL's actor passes the outcome rewards only
            and adds the token KL rewards to the advantages afterwards.
        loss_mask: [B, T], rolled as AReaL's actor does; bool, integer or float.
        turn_ids: [B, T] integer, rolled like ``loss_mask``; read only on ``loss_mask``
            positions, where they must be in [0, T) and non-decreasing along the row.
        seq_no_eos_mask: [B] bool, True on rows truncated without EOS.
        discount: γ, per turn.
        gae_lambda: λ per turn, a float or a [B] tensor (AReaL's per-sample λ, which in turn
            mode is a function of each row's number of turns: pass ``turn_ids`` to
            :func:`vapo_length_adaptive_lam` / :func:`relative_position_lam`).

    Returns:
        ``(advantages, returns)`` as AReaL's: times ``loss_mask``, and off the mask the
        advantage is 0 and the return is ``values``. Turn rewards are summed in float32
        (float64 for float64 rewards) where AReaL sums in the rewards' dtype.

    There is no SAE variant at turn level. SAE starts a segment at a sampled token whose
    probability is below a threshold, and a turn is one timestep made of many sampled
    tokens: the rule has nothing to read there unless one invents a per-turn probability
    (the minimum? the product?), which neither the SAE paper nor AReaL defines. Turn-level
    GAE is itself a segmentation, by turns: with γ = 1 its advantage equals, on each
    turn's first position, that of ``sae_ext.advantages_from_boundaries`` with the turns'
    first positions as boundaries, ``lam_inner=1`` and the same bootstrap.
    """
    _check_batch(rewards, seq_no_eos_mask, 1, "values[:, -1] bootstraps truncated rows")
    for name, t in (("values", values), ("loss_mask", loss_mask)):
        if t.shape != rewards.shape:
            raise ValueError(f"AReaL turn-level GAE: `{name}` must have the shape of "
                             f"`rewards`, {tuple(rewards.shape)}, got {tuple(t.shape)}")
    valid, ids, first, turn_valid = _turn_slots(loss_mask, turn_ids)
    acc = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    turn_rewards = torch.zeros(first.shape, dtype=acc, device=rewards.device)
    turn_rewards.scatter_add_(1, ids, torch.where(valid, rewards.to(acc), 0))
    turn_values = values.gather(1, first.clamp(max=rewards.shape[1] - 1))
    bootstrap = values[:, -1] * seq_no_eos_mask.to(values.dtype)
    adv, ret = sae_ext.gae(turn_rewards, turn_values, turn_valid, gamma=float(discount),
                           lam=_lam(gae_lambda), bootstrap=bootstrap)
    m = loss_mask.to(adv.dtype)
    return adv.gather(1, ids) * m, ret.gather(1, ids) * m + values * (1 - m)


def turn_counts(loss_mask: Tensor, turn_ids: Tensor) -> Tensor:
    """AReaL's ``turn_counts`` (``_build_gae_lambda_context``): per row, the number of turn
    ids that have a ``loss_mask`` position. [B] int64."""
    return _turn_slots(loss_mask, turn_ids)[3].sum(dim=1)


def _steps_mask(loss_mask: Tensor, turn_ids: Optional[Tensor]) -> Tensor:
    """What AReaL's ``timestep_lengths`` counts: loss-mask positions, or with ``turn_ids``
    (``gae_timestep_unit="turn"``) the turns, one slot each."""
    return loss_mask if turn_ids is None else _turn_slots(loss_mask, turn_ids)[3]


def vapo_length_adaptive_lam(loss_mask: Tensor, alpha: float, *,
                             turn_ids: Optional[Tensor] = None) -> Tensor:
    """AReaL's ``vapo_length_adaptive_gae``: ``1 - 1 / (alpha * L)``, clamped at 0; 0 for
    empty rows. L is each row's loss-mask count, or with ``turn_ids`` its number of turns
    (AReaL's ``timestep_lengths`` in turn mode)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return sae_ext.length_adaptive_lam(_steps_mask(loss_mask, turn_ids), alpha=float(alpha))


def relative_position_lam(loss_mask: Tensor, q: float, *,
                          turn_ids: Optional[Tensor] = None) -> Tensor:
    """AReaL's ``relative_position_gae_lambda``: ``q ** (1 / (L - 1))`` for L >= 2, 1 for
    L = 1, 0 for empty rows, so a terminal reward keeps the fraction ``q`` at the first step
    of every row whatever its length. L as in :func:`vapo_length_adaptive_lam`."""
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) \
            or not 0 < q <= 1:
        raise ValueError(f"q must be a finite number in (0, 1], got {q!r}")
    lengths = (_steps_mask(loss_mask, turn_ids) != 0).sum(dim=-1)
    steps = (lengths - 1).clamp_min(1).to(torch.float32)
    lam = torch.exp(math.log(float(q)) / steps)
    return torch.where(lengths > 1, lam, (lengths == 1).to(torch.float32))
