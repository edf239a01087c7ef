"""NeMo-RL integration: its ``GeneralizedAdvantageEstimator``, fused, and SAE in the same class.

Matched against NeMo-RL v0.7.0 (NVIDIA-NeMo/RL, tag v0.7.0, commit 81aa43dd),
``nemo_rl/algorithms/advantage_estimator.py``. NeMo-RL is not installable from PyPI, so the
tests compare against loops written from that file.

:class:`GeneralizedAdvantageEstimator` has NeMo-RL's constructor
``(estimator_config, loss_config)`` and ``compute_advantage(prompt_ids, rewards, mask,
values, reference_logprobs=None, logprobs=None, **kwargs)``, and NeMo-RL's conventions:

- ``rewards`` is one scalar per sample, placed on the last position of ``mask`` (plus, with
  ``use_kl_in_reward``, ``-kl_coef * KL`` on every position, through NeMo-RL's own
  ``calculate_kl``, so that option needs nemo_rl installed).
- The recursion carries the value and the advantage across masked positions.
- ``normalize_advantages`` whitens over the mask with the unbiased variance, as NeMo-RL does;
  advantages are 0 at masked positions (NeMo-RL zeroes them too). Returns equal NeMo-RL's on
  the mask and are 0 elsewhere, where NeMo-RL leaves the carried advantage plus the value.

SAE: ``estimator_config["sae"] = True`` (optional ``sae_threshold``, default 0.2, and
``sae_lam_inner``, default 1.0). The log-probs are the ``logprobs`` NeMo-RL's PPO loop already
passes (``prev_logprobs``, the policy's log-probs of the sampled tokens before the update).
NeMo-RL's λ (``gae_lambda``, or ``gae_lambda_policy``/length-adaptive for the policy) is SAE's
λ at segment starts.

Per-sample and decoupled λ (``gae_lambda_value``, ``gae_lambda_policy``,
``length_adaptive_alpha``: VAPO) run once through the ops' per-row λ and critic λ
(``lam=Tensor[B]``, ``lam_critic=``), in :meth:`GeneralizedAdvantageEstimator._decoupled`,
where NeMo-RL runs its loop twice.

Switching it on: NeMo-RL's PPO builds its estimator in
``nemo_rl.algorithms.ppo._create_advantage_estimator`` from the module-level name
``GeneralizedAdvantageEstimator`` when ``ppo.adv_estimator.name`` is ``gae``. :func:`install`
points that name at this class; call it in the script that runs NeMo-RL's PPO (its training
loop runs in that driver process) before ``setup``.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

import sae_ext
from sae_ext.integrations import _config_value as _get

__all__ = ["GeneralizedAdvantageEstimator", "TESTED_NEMO_RL_COMMIT", "TESTED_NEMO_RL_VERSION",
           "install", "whiten_like_nemo_rl"]

TESTED_NEMO_RL_VERSION = "0.7.0"
TESTED_NEMO_RL_COMMIT = "81aa43dda4765b0429cf31dab44441e4e4383911"

_PPO_MODULE = "nemo_rl.algorithms.ppo"


def whiten_like_nemo_rl(advantages: Tensor, mask: Tensor) -> Tensor:
    """NeMo-RL's ``_reward_whiten``: masked mean (sum over ``n + 1e-8``), unbiased masked
    variance, ``(x - mean) * rsqrt(var + 1e-8)``; 0 at masked positions."""
    m = (mask != 0).to(advantages.dtype)
    n = m.sum()
    mean = (advantages * m).sum() / (n + 1e-8)
    var = ((advantages - mean).pow(2) * m).sum() / (n + 1e-8) * (n / (n - 1))
    return (advantages - mean) * torch.rsqrt(var + 1e-8) * m


class GeneralizedAdvantageEstimator:
    """NeMo-RL's GAE estimator on the fused op; SAE when ``estimator_config["sae"]``."""

    def __init__(self, estimator_config: Any, loss_config: Any):
        self.gae_lambda = float(_get(estimator_config, "gae_lambda"))
        self.gae_gamma = float(_get(estimator_config, "gae_gamma"))
        self.normalize_advantages = bool(_get(estimator_config, "normalize_advantages", False))
        self.gae_lambda_value = _get(estimator_config, "gae_lambda_value")
        self.gae_lambda_policy = _get(estimator_config, "gae_lambda_policy")
        self.length_adaptive_alpha = float(_get(estimator_config, "length_adaptive_alpha", 0.0))
        self.sae = bool(_get(estimator_config, "sae", False))
        self.sae_threshold = float(_get(estimator_config, "sae_threshold", 0.2))
        self.sae_lam_inner = float(_get(estimator_config, "sae_lam_inner", 1.0))
        self.use_kl_in_reward = bool(_get(loss_config, "use_kl_in_reward", False))
        self.kl_coef = float(_get(loss_config, "reference_policy_kl_penalty", 0.0))
        self.kl_type = _get(loss_config, "reference_policy_kl_type", "k3")

    def _build_token_level_rewards(self, rewards: Tensor, mask: Tensor,
                                   logprobs: Optional[Tensor],
                                   reference_logprobs: Optional[Tensor]) -> Tensor:
        """The scalar reward on each row's last mask position, ``-kl_coef * KL`` on every
        position when NeMo-RL puts the KL in the reward; 0 off the mask."""
        valid = mask != 0
        out = torch.zeros(mask.shape, device=rewards.device, dtype=rewards.dtype)
        if (self.use_kl_in_reward and self.kl_coef > 0 and logprobs is not None
                and reference_logprobs is not None):
            from nemo_rl.algorithms.utils import calculate_kl  # NeMo-RL's own estimator

            out = out - self.kl_coef * calculate_kl(logprobs, reference_logprobs, self.kl_type)
        T = mask.shape[1]
        last = T - 1 - valid.fliplr().to(torch.int8).argmax(dim=1)
        has = valid.any(dim=1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        out[rows[has], last[has]] += rewards[has]
        return out * valid.to(out.dtype)

    def _lam_policy(self, mask: Tensor):
        """NeMo-RL's priority: length-adaptive λ, then gae_lambda_policy, then gae_lambda."""
        if self.length_adaptive_alpha > 0:
            return sae_ext.length_adaptive_lam(mask, alpha=self.length_adaptive_alpha)
        if self.gae_lambda_policy is not None:
            return float(self.gae_lambda_policy)
        return self.gae_lambda

    def _lam_value(self) -> float:
        return float(self.gae_lambda_value) if self.gae_lambda_value is not None else self.gae_lambda

    def _decoupled(self) -> bool:
        return (self.gae_lambda_value is not None or self.gae_lambda_policy is not None
                or self.length_adaptive_alpha > 0)

    @torch.no_grad()
    def compute_advantage(self, prompt_ids, rewards, mask, values, reference_logprobs=None,
                          logprobs=None, **kwargs) -> Tuple[Tensor, Tensor]:
        r = self._build_token_level_rewards(rewards, mask, logprobs, reference_logprobs)
        if self.sae and logprobs is None:
            raise ValueError("nemo_rl SAE estimator: `logprobs` (the sampled tokens' log-probs, "
                             "NeMo-RL's prev_logprobs) is required when estimator_config['sae']")
        if self._decoupled():
            advantages, returns = self._per_sample_or_decoupled(r, values, mask, logprobs)
        elif self.sae:
            advantages, returns = sae_ext.advantages(
                r, values, logprobs, mask, lam=self.gae_lambda, gamma=self.gae_gamma,
                lam_inner=self.sae_lam_inner, threshold=self.sae_threshold)
        else:
            advantages, returns = sae_ext.gae(r, values, mask, gamma=self.gae_gamma,
                                              lam=self.gae_lambda)
        if self.normalize_advantages:
            advantages = whiten_like_nemo_rl(advantages, mask)
        return advantages, returns

    def _per_sample_or_decoupled(self, r: Tensor, values: Tensor, mask: Tensor,
                                 logprobs: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """NeMo-RL's VAPO settings: advantages with the policy λ (a float, or a [B] tensor for
        length-adaptive λ), returns with the value λ: one pass, the critic λ in the op."""
        lam_policy, lam_value = self._lam_policy(mask), self._lam_value()
        if self.sae:
            return sae_ext.advantages(r, values, logprobs, mask, lam=lam_policy,
                                      gamma=self.gae_gamma, lam_inner=self.sae_lam_inner,
                                      threshold=self.sae_threshold, lam_critic=lam_value)
        return sae_ext.gae(r, values, mask, gamma=self.gae_gamma, lam=lam_policy,
                           lam_critic=lam_value)


def install(ppo_module: Any = None) -> None:
    """Make NeMo-RL's PPO build this class for ``ppo.adv_estimator.name: gae``: points
    ``nemo_rl.algorithms.ppo.GeneralizedAdvantageEstimator`` (the name its
    ``_create_advantage_estimator`` looks up when it runs) at it. Idempotent."""
    if ppo_module is None:
        import importlib

        ppo_module = sys.modules.get(_PPO_MODULE) or importlib.import_module(_PPO_MODULE)
    if not hasattr(ppo_module, "GeneralizedAdvantageEstimator"):
        raise AttributeError(f"{ppo_module.__name__} has no GeneralizedAdvantageEstimator: "
                             f"not the NeMo-RL layout this was written against "
                             f"(v{TESTED_NEMO_RL_VERSION})")
    ppo_module.GeneralizedAdvantageEstimator = GeneralizedAdvantageEstimator
