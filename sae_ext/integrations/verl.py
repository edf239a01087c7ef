"""verl integration: a GAE drop-in and an ``"sae"`` advantage estimator.

Two things live here.

1. :func:`compute_gae_advantage_return` has the signature of
   ``verl.trainer.ppo.core_algos.compute_gae_advantage_return`` and returns what it returns on
   every valid token: advantages whitened over the valid tokens of the batch with the unbiased
   variance (verl's ``masked_whiten``), returns not whitened. It runs the fused op instead of a
   Python loop over T, and accepts bool, integer or float masks (verl's own loop computes
   ``1 - response_mask`` and so rejects bool masks). It does not need verl installed.

2. Importing this module, with verl installed, registers the estimator ``"sae"`` in verl's
   registry (``core_algos.register_adv_est``), so ``algorithm.adv_estimator=sae`` selects it.

   verl (checked on 0.9.1) calls a registered estimator from
   ``verl.trainer.ppo.ray_trainer.compute_advantage`` with ``token_level_rewards``,
   ``response_mask``, ``config`` and, when present, ``index`` and ``reward_baselines``: never
   with ``values`` or ``old_log_probs``, which SAE needs (only the built-in GAE branch gets
   the values). So this module also wraps ``compute_advantage``: the wrapper does nothing but
   make the batch (and the gamma and lam) it was given visible to the ``"sae"`` estimator for
   the duration of the call, and runs verl's own ``compute_advantage`` unchanged, for every
   estimator. The wrapper is installed into ``verl.trainer.ppo.ray_trainer`` when that module
   is imported (or at once, if it already is), before the trainers bind the name.

   The estimator needs the critic: with ``algorithm.adv_estimator`` other than ``gae`` verl
   turns the critic off unless ``critic.enable=True`` is set.

   The import must happen in the process that runs the trainer, which in verl is a Ray actor,
   not the launching script. verl imports every module named in the environment variable
   ``VERL_USE_EXTERNAL_MODULES`` whenever it is itself imported, in every process that sees
   the variable (a Ray cluster started by the driver inherits it; for one started separately,
   pass it in ``ray_kwargs.ray_init.runtime_env.env_vars``), so::

       VERL_USE_EXTERNAL_MODULES=sae_ext.integrations.verl python -m verl.trainer.main_ppo \\
           algorithm.adv_estimator=sae algorithm.lam=0.95 critic.enable=True ...

   Optional settings, read from the ``algorithm`` config (new keys, hence Hydra's ``+``):
   ``+algorithm.sae_threshold`` (p, default 0.2, the paper's), ``+algorithm.sae_lam_inner``
   (default 1.0), ``+algorithm.sae_whiten`` (default true: whiten like verl's GAE),
   ``+algorithm.sae_log_prob_key`` (default ``old_log_probs``; ``rollout_log_probs`` uses the
   inference engine's log-probs when the rollout records them). ``algorithm.gamma`` and
   ``algorithm.lam`` are SAE's gamma and lambda (lambda applied where a segment starts).

See docs/integrations.md.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

import sae_ext
from sae_ext.integrations import (_config_value, _package_available, _patch_pending,
                                  _patch_when_imported, _whiten_unbiased)

__all__ = [
    "DEFAULTS",
    "ESTIMATOR_NAME",
    "TESTED_VERL_VERSION",
    "compute_gae_advantage_return",
    "compute_sae_advantage_return",
    "install",
    "is_installed",
    "sae_advantage_estimator",
]

#: The name under which the estimator is registered: ``algorithm.adv_estimator=sae``.
ESTIMATOR_NAME = "sae"
#: The verl release this module was written and tested against.
TESTED_VERL_VERSION = "0.9.1"

#: Fallbacks for the optional settings when the algorithm config lacks the key. verl 0.9.1
#: hands estimators its ``algorithm`` config as a DictConfig, so ``+algorithm.sae_*`` keys
#: reach the estimator; a trainer that converted it to verl's ``AlgoConfig`` dataclass would
#: reject unknown keys, and there these defaults are the way to change the settings (set them
#: in a module named in VERL_USE_EXTERNAL_MODULES).
DEFAULTS = {"threshold": 0.2, "lam_inner": 1.0, "whiten": True, "log_prob_key": "old_log_probs"}

_RAY_TRAINER = "verl.trainer.ppo.ray_trainer"
_WRAPPED_FLAG = "_sae_ext_wrapped"
# The arguments of the wrapped compute_advantage call in progress (data, gamma, lam...), if any.
_CURRENT_CALL: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar(
    "sae_ext_verl_compute_advantage_call", default=None)


# --------------------------------------------------------------------------------------------
# Pure functions (no verl needed)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def compute_gae_advantage_return(
    token_level_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float | Tensor,
    lam: float | Tensor,
) -> Tuple[Tensor, Tensor]:
    """Drop-in for ``verl.trainer.ppo.core_algos.compute_gae_advantage_return``.

    Args:
        token_level_rewards: [B, T] token rewards.
        values: [B, T] critic values.
        response_mask: [B, T] nonzero on action tokens; bool, integer or float. Masked tokens
            (padding, tool/observation tokens) are skipped as verl skips them.
        gamma, lam: floats (or 0-d tensors).

    Returns:
        ``(advantages, returns)``: advantages whitened over the valid tokens (unbiased
        variance, as verl), returns = raw advantages + values. Equal to verl's on every valid
        token; 0 on masked tokens (verl leaves values there that its losses mask out).
    """
    adv, ret = sae_ext.gae(token_level_rewards, values, response_mask,
                           gamma=float(gamma), lam=float(lam))
    return _whiten_unbiased(adv, response_mask), ret


@torch.no_grad()
def compute_sae_advantage_return(
    token_level_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    old_log_probs: Tensor,
    gamma: float | Tensor,
    lam: float | Tensor,
    *,
    lam_inner: float = 1.0,
    threshold: float = 0.2,
    whiten: bool = True,
    bootstrap: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """SAE in verl's conventions: :func:`compute_gae_advantage_return` plus the log-probs of
    the sampled tokens (verl's ``old_log_probs``); a valid token whose log-prob is below
    ``log(threshold)`` starts a new segment, and ``lam`` applies only there (``lam_inner``
    elsewhere). ``whiten=True`` whitens the advantages as verl's GAE does."""
    adv, ret = sae_ext.advantages(
        token_level_rewards, values, old_log_probs, response_mask,
        lam=float(lam), gamma=float(gamma), lam_inner=float(lam_inner),
        threshold=float(threshold), bootstrap=bootstrap)
    if whiten:
        adv = _whiten_unbiased(adv, response_mask)
    return adv, ret


# --------------------------------------------------------------------------------------------
# The registered estimator
# --------------------------------------------------------------------------------------------

def _batch_tensor(data: Any, key: str) -> Optional[Tensor]:
    if data is None:
        return None
    batch = getattr(data, "batch", None)
    if batch is None or key not in batch.keys():
        return None
    return batch[key]


def sae_advantage_estimator(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    config: Any = None,
    values: Optional[Tensor] = None,
    old_log_probs: Optional[Tensor] = None,
    **unused: Any,
) -> Tuple[Tensor, Tensor]:
    """The function registered in verl as ``"sae"``.

    verl calls it with ``token_level_rewards``, ``response_mask`` and ``config`` (its
    ``algorithm`` config), plus ``index``/``reward_baselines``, which SAE ignores. ``values``
    and the log-probs are taken from the keyword arguments if a caller passes them, else from
    the batch that the wrapped ``compute_advantage`` is working on. gamma and lambda are the
    ``gamma``/``lam`` arguments of that ``compute_advantage`` call, as for verl's GAE (the
    trainers pass ``algorithm.gamma``/``algorithm.lam``), else ``config.gamma``/``config.lam``.

    Config keys: ``sae_threshold`` (0.2),
    ``sae_lam_inner`` (1.0), ``sae_whiten`` (True), ``sae_log_prob_key`` (``old_log_probs``);
    a missing key falls back to :data:`DEFAULTS`.
    """
    call = _CURRENT_CALL.get() or {}
    data = call.get("data")
    log_prob_key = str(_config_value(config, "sae_log_prob_key", DEFAULTS["log_prob_key"]))
    if values is None:
        values = _batch_tensor(data, "values")
    if old_log_probs is None:
        old_log_probs = _batch_tensor(data, log_prob_key)
    if values is None or old_log_probs is None:
        if data is None:
            raise RuntimeError(
                "sae advantage estimator: verl's compute_advantage passes registered estimators "
                "neither `values` nor `old_log_probs`, and no batch is available: "
                "sae_ext.integrations.verl must be imported in the process that runs the trainer "
                "before verl.trainer.ppo.ray_trainer is, so that compute_advantage is wrapped; "
                "set VERL_USE_EXTERNAL_MODULES=sae_ext.integrations.verl (see "
                "docs/integrations.md).")
        missing = "values" if values is None else log_prob_key
        hint = (" SAE needs a critic: set critic.enable=True." if missing == "values" else
                " Set +algorithm.sae_log_prob_key to a key the batch has.")
        raise KeyError(f"sae advantage estimator: the batch has no '{missing}' "
                       f"(keys: {sorted(data.batch.keys())}).{hint}")
    if values.shape != token_level_rewards.shape or old_log_probs.shape != token_level_rewards.shape:
        raise ValueError(
            "sae advantage estimator: values/log-probs of shape "
            f"{tuple(values.shape)}/{tuple(old_log_probs.shape)} do not match token_level_rewards "
            f"{tuple(token_level_rewards.shape)}")
    return compute_sae_advantage_return(
        token_level_rewards, values, response_mask, old_log_probs,
        gamma=float(call["gamma"] if "gamma" in call else _config_value(config, "gamma", 1.0)),
        lam=float(call["lam"] if "lam" in call else _config_value(config, "lam", 1.0)),
        lam_inner=float(_config_value(config, "sae_lam_inner", DEFAULTS["lam_inner"])),
        threshold=float(_config_value(config, "sae_threshold", DEFAULTS["threshold"])),
        whiten=bool(_config_value(config, "sae_whiten", DEFAULTS["whiten"])),
    )


# --------------------------------------------------------------------------------------------
# Installing into verl
# --------------------------------------------------------------------------------------------

def _wrap_compute_advantage(original):
    """verl's compute_advantage, with its batch (and its gamma and lam) exposed to the "sae"
    estimator for the duration of the call."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def compute_advantage(data, *args, **kwargs):
        try:
            bound = signature.bind(data, *args, **kwargs)
            bound.apply_defaults()
            call = dict(bound.arguments)
        except TypeError:  # let verl report its own signature errors
            call = {"data": data}
        token = _CURRENT_CALL.set(call)
        try:
            return original(data, *args, **kwargs)
        finally:
            _CURRENT_CALL.reset(token)

    setattr(compute_advantage, _WRAPPED_FLAG, True)
    return compute_advantage


def _patch_ray_trainer(module) -> None:
    original = getattr(module, "compute_advantage", None)
    if original is None or getattr(original, _WRAPPED_FLAG, False):
        return
    wrapped = _wrap_compute_advantage(original)
    module.compute_advantage = wrapped
    # Modules that bound the name before we got here (ray_trainer imported before us).
    for name, other in list(sys.modules.items()):
        if name.startswith("verl.") and getattr(other, "compute_advantage", None) is original:
            other.compute_advantage = wrapped


def install() -> None:
    """Register ``"sae"`` in verl's estimator registry and wrap ``compute_advantage``.
    Idempotent; done by importing this module when verl is installed."""
    from verl.trainer.ppo import core_algos

    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    if registry.get(ESTIMATOR_NAME) is not sae_advantage_estimator:
        core_algos.register_adv_est(ESTIMATOR_NAME)(sae_advantage_estimator)
    # As soon as ray_trainer is executed, so that every module that later does
    # ``from ...ray_trainer import compute_advantage`` binds the wrapper.
    _patch_when_imported(_RAY_TRAINER, _patch_ray_trainer)


def is_installed() -> bool:
    """True when ``"sae"`` is registered in verl and compute_advantage is (or will be) wrapped."""
    core_algos = sys.modules.get("verl.trainer.ppo.core_algos")
    if core_algos is None or core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not sae_advantage_estimator:
        return False
    module = sys.modules.get(_RAY_TRAINER)
    if module is not None:
        return bool(getattr(module.compute_advantage, _WRAPPED_FLAG, False))
    return _patch_pending(_RAY_TRAINER)


if _package_available("verl"):
    install()
