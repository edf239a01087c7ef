"""slime integration: its batched GAE, fused, and SAE through ``--custom-advantage-function-path``.

Matched against slime v0.3.1 (THUDM/slime, tag v0.3.1, commit a6272da):
``slime/utils/ppo_utils.py`` (``get_advantages_and_returns_batch``, ``vanilla_gae``,
``chunked_gae``) and the hook in ``slime/backends/megatron_utils/loss.py``
(``compute_advantages_and_returns``). slime is not installable here (Megatron), so the tests
compare against loops written from that source.

slime's conventions, which the functions here keep:

- Per-sample lists: ``values_list[i]``, ``rewards_list[i]`` (and the log-probs) have
  ``response_lengths[i]`` entries, one per response token.
- Every response token is a step, tool/observation tokens included: slime's GAE does not read
  the loss mask (``loss_masks`` only enter its advantage whitening and the losses). The value
  after the last token is 0 (no bootstrap).
- ``chunked_gae`` and ``vanilla_gae`` compute the same recursion (the chunked one as a
  matrix-power scan over 128-token chunks); one fused pass gives the numbers of both, up to
  rounding. The samples go to the ops as packed rows (``sae_ext.gae_varlen``,
  ``advantages_varlen``: back to back, with ``cu_seqlens``), not padded to the longest one.

With context parallelism (CP > 1) slime gathers each sample's full response from its CP
shards, runs GAE, and slices the shard back out; the functions here do the same with slime's
own ``all_gather_with_cp`` / ``slice_log_prob_with_cp`` (not exercised here: no Megatron).

Switching it on: slime calls ``custom_advantage_function_path(args, rollout_data)`` after its
KL computation, and the function must set ``rollout_data["advantages"]`` and
``rollout_data["returns"]``. So::

    --advantage-estimator ppo \\
    --custom-advantage-function-path sae_ext.integrations.slime.sae_advantage_function

(or ``...slime.gae_advantage_function`` for the fused GAE alone). Both build the rewards as
slime's ``ppo`` branch does (``-kl_coef * kl`` per token, the sample's reward on its last
token), use ``args.gamma`` and ``args.lambd``, and leave ``--normalize-advantages`` to slime,
which runs it after the hook. SAE reads ``rollout_data["log_probs"]`` (or
``rollout_log_probs`` with ``--use-rollout-logprobs``, as slime itself does) and the optional
``args.sae_threshold`` / ``args.sae_lam_inner`` (defaults in :data:`DEFAULTS`).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import sae_ext
from sae_ext.integrations import _config_value

__all__ = ["DEFAULTS", "TESTED_SLIME_COMMIT", "TESTED_SLIME_VERSION", "gae_advantage_function",
           "get_advantages_and_returns_batch", "get_sae_advantages_and_returns_batch",
           "sae_advantage_function"]

TESTED_SLIME_VERSION = "0.3.1"
TESTED_SLIME_COMMIT = "a6272da0d4f3d0a08520c99a2f3b4f6c887960dc"

#: SAE settings when ``args`` lacks ``sae_threshold`` / ``sae_lam_inner`` (slime's parser does
#: not define them; add them with its extra-arguments mechanism, or change these here).
DEFAULTS = {"threshold": 0.2, "lam_inner": 1.0}


def _cp():
    """(cp_size, cp_rank); (1, 0) without Megatron."""
    try:
        from megatron.core import mpu
    except ImportError:
        return 1, 0
    return mpu.get_context_parallel_world_size(), mpu.get_context_parallel_rank()


def _packed(total_lengths, response_lengths, lists: Sequence[Sequence[Tensor]]):
    """Each sample's full response (gathered from its CP shards), the samples back to back
    as one [N] tensor per input, and their ``cu_seqlens``: the ops' packed rows, so nothing
    is padded to the longest response (slime pads to [B, max_len] to run its loop)."""
    B = len(response_lengths)
    if B == 0:
        raise ValueError("slime GAE: empty batch")
    for name, xs in zip(("values_list", "rewards_list", "log_probs_list"), lists):
        if len(xs) != B:
            raise ValueError(f"slime GAE: `{name}` has {len(xs)} samples, "
                             f"`response_lengths` {B}")
    cp_size, _ = _cp()
    if cp_size > 1:
        from slime.backends.megatron_utils.cp_utils import all_gather_with_cp

        lists = [[all_gather_with_cp(x, tl, rl) for x, tl, rl in
                  zip(xs, total_lengths, response_lengths)] for xs in lists]
    lengths = [int(L) for L in response_lengths]
    for name, xs in zip(("values_list", "rewards_list", "log_probs_list"), lists):
        for i, (x, L) in enumerate(zip(xs, lengths)):
            if x.shape[0] < L:
                raise ValueError(f"slime GAE: `{name}[{i}]` has {x.shape[0]} entries, "
                                 f"`response_lengths[{i}]` is {L}")
    packed = [torch.cat([x[:L] for x, L in zip(xs, lengths)]) for xs in lists]
    offsets = [0]
    for L in lengths:
        offsets.append(offsets[-1] + L)
    cu_seqlens = torch.tensor(offsets, dtype=torch.int64, device=packed[0].device)
    return packed, cu_seqlens


def _unpack(total_lengths, response_lengths, adv: Tensor, ret: Tensor):
    cp_size, _ = _cp()
    lengths = [int(L) for L in response_lengths]
    advs, rets = list(adv.split(lengths)), list(ret.split(lengths))
    if cp_size > 1:
        from slime.backends.megatron_utils.cp_utils import slice_log_prob_with_cp

        advs = [slice_log_prob_with_cp(a, tl, L) for a, tl, L in zip(advs, total_lengths, lengths)]
        rets = [slice_log_prob_with_cp(r, tl, L) for r, tl, L in zip(rets, total_lengths, lengths)]
    return advs, rets


@torch.no_grad()
def get_advantages_and_returns_batch(
    total_lengths: Sequence[int],
    response_lengths: Sequence[int],
    values_list: Sequence[Tensor],
    rewards_list: Sequence[Tensor],
    gamma: float,
    lambd: float,
    chunked: bool = True,
) -> Tuple[List[Tensor], List[Tensor]]:
    """Drop-in for slime's ``get_advantages_and_returns_batch``: lists of per-sample
    advantages and returns (``response_lengths[i]`` entries each). ``chunked`` is accepted
    for the signature; both of slime's variants compute what the one fused pass does."""
    (v, r), cu_seqlens = _packed(total_lengths, response_lengths, [values_list, rewards_list])
    adv, ret = sae_ext.gae_varlen(r, v, cu_seqlens, gamma=float(gamma), lam=float(lambd))
    return _unpack(total_lengths, response_lengths, adv, ret)


@torch.no_grad()
def get_sae_advantages_and_returns_batch(
    total_lengths: Sequence[int],
    response_lengths: Sequence[int],
    values_list: Sequence[Tensor],
    rewards_list: Sequence[Tensor],
    log_probs_list: Sequence[Tensor],
    gamma: float,
    lambd: float,
    *,
    lam_inner: float = 1.0,
    threshold: float = 0.2,
) -> Tuple[List[Tensor], List[Tensor]]:
    """SAE in slime's conventions: ``lambd`` where a segment starts (a response token whose
    log-prob is below ``log(threshold)``), ``lam_inner`` elsewhere."""
    (v, r, lp), cu_seqlens = _packed(total_lengths, response_lengths,
                                     [values_list, rewards_list, log_probs_list])
    adv, ret = sae_ext.advantages_varlen(r, v, lp, cu_seqlens, lam=float(lambd),
                                         gamma=float(gamma), lam_inner=float(lam_inner),
                                         threshold=float(threshold))
    return _unpack(total_lengths, response_lengths, adv, ret)


def _ppo_rewards(args: Any, rollout_data: dict) -> List[Tensor]:
    """slime's ``ppo`` branch: ``-kl_coef * kl`` per token, the reward added on the last token
    (on CP rank 0, which holds it), without modifying ``rollout_data["kl"]``."""
    _, cp_rank = _cp()
    out = []
    for reward, k in zip(rollout_data["rewards"], rollout_data["kl"]):
        k = k * (-float(args.kl_coef))
        if cp_rank == 0:
            k[-1] += reward
        out.append(k)
    return out


def _require(args: Any, rollout_data: dict, key: str, hint: str) -> Any:
    value = rollout_data.get(key)
    if value is None:
        raise KeyError(f"sae_ext.integrations.slime: rollout_data has no '{key}'. {hint}")
    return value


def gae_advantage_function(args: Any, rollout_data: dict) -> None:
    """For ``--custom-advantage-function-path``: slime's ``ppo`` GAE on the fused op."""
    values = _require(args, rollout_data, "values", "GAE needs the critic's values.")
    adv, ret = get_advantages_and_returns_batch(
        rollout_data["total_lengths"], rollout_data["response_lengths"], values,
        _ppo_rewards(args, rollout_data), args.gamma, args.lambd)
    rollout_data["advantages"], rollout_data["returns"] = adv, ret


def sae_advantage_function(args: Any, rollout_data: dict) -> None:
    """For ``--custom-advantage-function-path``: SAE with slime's γ (``args.gamma``) and λ
    (``args.lambd``, applied at segment starts)."""
    values = _require(args, rollout_data, "values", "SAE needs the critic's values.")
    key = "rollout_log_probs" if getattr(args, "use_rollout_logprobs", False) else "log_probs"
    log_probs = _require(args, rollout_data, key,
                         "SAE needs the log-probs of the sampled tokens.")
    adv, ret = get_sae_advantages_and_returns_batch(
        rollout_data["total_lengths"], rollout_data["response_lengths"], values,
        _ppo_rewards(args, rollout_data), log_probs, args.gamma, args.lambd,
        lam_inner=float(_config_value(args, "sae_lam_inner", DEFAULTS["lam_inner"])),
        threshold=float(_config_value(args, "sae_threshold", DEFAULTS["threshold"])))
    rollout_data["advantages"], rollout_data["returns"] = adv, ret
