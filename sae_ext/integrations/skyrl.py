"""SkyRL integration: its GAE, fused, and an ``"sae"`` entry in its advantage-estimator registry.

Matched against the ``skyrl`` package 0.3.0 on PyPI (the former ``skyrl-train``, now
``skyrl.backends.skyrl_train``; unchanged in NovaSky-AI/SkyRL main at a956457):
``skyrl/backends/skyrl_train/utils/ppo_utils.py``.

:func:`compute_gae_advantage_return` has the signature of SkyRL's
``compute_gae_advantage_return(token_level_rewards, values, response_mask, gamma, lambd,
**kwargs)`` and its numbers: SkyRL's recursion does not read the mask (every position is a
step, the next value of the last position is 0), then whitens the advantages over
``response_mask`` with the unbiased variance; returns are not whitened. That equals the
contract's skipping wherever the masked positions are trailing padding whose values and
rewards are 0; where they are not (a critic's outputs on padding, multi-turn observation
tokens inside ``response_mask`` = 0 runs), ``skip_masked=True`` skips them as verl does.
Advantages are 0 at masked positions (SkyRL leaves whitened values there).

Switching SAE on::

    import sae_ext.integrations.skyrl   # registers "sae" in AdvantageEstimatorRegistry
    ... trainer.algorithm.advantage_estimator=sae trainer.algorithm.lambd=0.95 ...

in the process that runs SkyRL's trainer (SkyRL's own custom-estimator example registers in
its entry script; the registry then reaches the Ray workers through its registry actor).
SkyRL hands a registered estimator ``token_level_rewards``, ``response_mask``, ``index``,
``values``, ``gamma``, ``lambd``, ``config`` and ``grpo_norm_by_std`` but no log-probs, so
this module also wraps ``RayPPOTrainer.compute_advantages_and_returns`` (the smallest
function that has the batch): during that call the batch is visible to the ``"sae"``
estimator, which reads ``action_log_probs`` from it (``rollout_logprobs`` with
``DEFAULTS["log_prob_key"] = "rollout_logprobs"``). SkyRL's ``AlgorithmConfig`` is a
dataclass without SAE keys; the SAE settings come from :data:`DEFAULTS` unless the config
object has ``sae_threshold`` / ``sae_lam_inner`` / ``sae_skip_masked`` attributes.
"""
from __future__ import annotations

import contextvars
import functools
import importlib
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

import sae_ext
from sae_ext.integrations import (_config_value, _package_available, _patch_when_imported,
                                  _whiten_unbiased)

__all__ = ["DEFAULTS", "ESTIMATOR_NAME", "TESTED_SKYRL_VERSION", "compute_gae_advantage_return",
           "compute_sae_advantage_return", "install", "sae_advantage_estimator",
           "wrap_trainer_class"]

ESTIMATOR_NAME = "sae"
TESTED_SKYRL_VERSION = "0.3.0"
DEFAULTS = {"threshold": 0.2, "lam_inner": 1.0, "skip_masked": False,
            "log_prob_key": "action_log_probs"}

_PPO_UTILS = "skyrl.backends.skyrl_train.utils.ppo_utils"
_TRAINER = "skyrl.train.trainer"
_WRAPPED_FLAG = "_sae_ext_wrapped"
_CURRENT_BATCH: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "sae_ext_skyrl_batch", default=None)


def _step_mask(response_mask: Tensor, skip_masked: bool) -> Tensor:
    # SkyRL's loop steps through every position: an all-true mask, as a stride-0 view.
    if skip_masked:
        return response_mask
    return torch.ones((), dtype=torch.bool, device=response_mask.device).expand(response_mask.shape)


@torch.no_grad()
def compute_gae_advantage_return(
    token_level_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float,
    lambd: float,
    *,
    skip_masked: bool = False,
    **kwargs: Any,
) -> Tuple[Tensor, Tensor]:
    """Drop-in for SkyRL's ``compute_gae_advantage_return``: ``(advantages, returns)``,
    advantages whitened over ``response_mask``. ``skip_masked=True``: masked positions are
    skipped (value and advantage carried across them) instead of being steps."""
    adv, ret = sae_ext.gae(token_level_rewards, values, _step_mask(response_mask, skip_masked),
                           gamma=float(gamma), lam=float(lambd))
    return _whiten_unbiased(adv, response_mask), ret


@torch.no_grad()
def compute_sae_advantage_return(
    token_level_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    log_probs: Tensor,
    gamma: float,
    lambd: float,
    *,
    lam_inner: float = 1.0,
    threshold: float = 0.2,
    skip_masked: bool = False,
    whiten: bool = True,
) -> Tuple[Tensor, Tensor]:
    """SAE in SkyRL's conventions: a response token (``response_mask``) whose log-prob is
    below ``log(threshold)`` starts a segment; ``lambd`` applies there, ``lam_inner``
    elsewhere. Steps as in :func:`compute_gae_advantage_return`."""
    starts = sae_ext.segment_boundaries(log_probs, response_mask, threshold=float(threshold))
    adv, ret = sae_ext.advantages_from_boundaries(
        token_level_rewards, values, starts, _step_mask(response_mask, skip_masked),
        lam=float(lambd), gamma=float(gamma), lam_inner=float(lam_inner))
    if whiten:
        adv = _whiten_unbiased(adv, response_mask)
    return adv, ret


def _setting(config: Any, name: str) -> Any:
    return _config_value(config, f"sae_{name}", DEFAULTS[name])


def _batch_get(batch: Any, key: str) -> Optional[Tensor]:
    if batch is None:
        return None
    try:
        return batch.get(key, None) if hasattr(batch, "get") else batch[key]
    except (KeyError, IndexError):
        return None


def sae_advantage_estimator(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    values: Optional[Tensor] = None,
    gamma: float = 1.0,
    lambd: float = 1.0,
    config: Any = None,
    log_probs: Optional[Tensor] = None,
    **unused: Any,
) -> Tuple[Tensor, Tensor]:
    """The function registered in SkyRL as ``"sae"``. ``log_probs`` from the keyword (SkyRL's
    ``compute_advantages_and_returns`` forwards extra keywords), else from the batch of the
    wrapped ``RayPPOTrainer.compute_advantages_and_returns`` call in progress."""
    if values is None:
        raise ValueError("sae advantage estimator: SkyRL passed no `values`; SAE needs a critic "
                         "(trainer.critic.model.path)")
    key = str(_setting(config, "log_prob_key"))
    if log_probs is None:
        batch = _CURRENT_BATCH.get()
        if batch is None:
            raise RuntimeError(
                "sae advantage estimator: SkyRL passes estimators no log-probs and no batch is "
                "available: import sae_ext.integrations.skyrl in the process that runs the "
                "trainer before it computes advantages, so that "
                "RayPPOTrainer.compute_advantages_and_returns is wrapped (docs/integrations.md)")
        log_probs = _batch_get(batch, key)
        if log_probs is None:
            raise KeyError(f"sae advantage estimator: the batch has no '{key}'")
    return compute_sae_advantage_return(
        token_level_rewards, values, response_mask, log_probs, gamma, lambd,
        lam_inner=float(_setting(config, "lam_inner")),
        threshold=float(_setting(config, "threshold")),
        skip_masked=bool(_setting(config, "skip_masked")))


def wrap_trainer_class(cls: type) -> None:
    """Wrap ``cls.compute_advantages_and_returns(self, data)`` so that ``data`` is visible to
    the ``"sae"`` estimator during the call; everything else runs unchanged. Idempotent."""
    original = cls.compute_advantages_and_returns
    if getattr(original, _WRAPPED_FLAG, False):
        return

    @functools.wraps(original)
    def compute_advantages_and_returns(self, data, *args, **kwargs):
        token = _CURRENT_BATCH.set(data)
        try:
            return original(self, data, *args, **kwargs)
        finally:
            _CURRENT_BATCH.reset(token)

    setattr(compute_advantages_and_returns, _WRAPPED_FLAG, True)
    cls.compute_advantages_and_returns = compute_advantages_and_returns


def _register(ppo_utils: Any) -> None:
    registry = ppo_utils.AdvantageEstimatorRegistry
    if ESTIMATOR_NAME not in registry._functions:
        registry.register(ESTIMATOR_NAME, sae_advantage_estimator)


def install() -> None:
    """Register ``"sae"`` in SkyRL's registry, and wrap the trainer's
    ``compute_advantages_and_returns`` if ``skyrl.train.trainer`` is imported (else when it
    is). Done by importing this module when SkyRL is installed."""
    _register(importlib.import_module(_PPO_UTILS))
    _patch_when_imported(_TRAINER, lambda module: wrap_trainer_class(module.RayPPOTrainer))


if _package_available("skyrl"):
    try:
        install()
    except Exception as exc:  # SkyRL present but its advantage code does not import here
        import warnings

        warnings.warn(f"sae_ext.integrations.skyrl: SkyRL is installed but \"sae\" was not "
                      f"registered ({type(exc).__name__}: {exc})", RuntimeWarning)
