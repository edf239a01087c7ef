"""Drop-ins for the PPO frameworks people use.

- :mod:`sae_ext.integrations.verl`: verl's ``compute_gae_advantage_return`` and an ``"sae"``
  advantage estimator registered in verl's own registry (``algorithm.adv_estimator=sae``).
- :mod:`sae_ext.integrations.openrlhf`: OpenRLHF's ``get_advantages_and_returns`` and its SAE
  variant.
- :mod:`sae_ext.integrations.trl`: TRL's PPO advantage block (GAE, then whitening) and its SAE
  variant.
- :mod:`sae_ext.integrations.areal`: AReaL's ``_compute_token_level_gae`` (rolled loss mask,
  bootstrap of truncated rows), its SAE variant and its per-sample λ.
- :mod:`sae_ext.integrations.skyrl`: SkyRL's ``compute_gae_advantage_return`` and an ``"sae"``
  entry in its ``AdvantageEstimatorRegistry``.
- :mod:`sae_ext.integrations.nemo_rl`: NeMo-RL's ``GeneralizedAdvantageEstimator`` (decoupled
  value/policy λ, VAPO length-adaptive λ) and an SAE estimator with the same interface.
- :mod:`sae_ext.integrations.slime`: slime's ``get_advantages_and_returns_batch`` and a function
  for its ``--custom-advantage-function-path``.

Each submodule is imported on its own (``import sae_ext.integrations.verl``); this package
imports none of them, so nothing here imports a framework. None of the submodules needs its
framework installed to compute: only the verl registration does, and it is skipped when verl
is absent. See docs/integrations.md.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys

import torch

import sae_ext

__all__ = ["areal", "nemo_rl", "openrlhf", "skyrl", "slime", "trl", "verl"]


# Helpers more than one drop-in uses (none of them imports a framework).

def _config_value(config, key, default=None):
    """``key`` of a framework's config: a dict or an omegaconf DictConfig (``.get``), or a
    dataclass, pydantic model or argparse namespace (an attribute). A missing key, or one set
    to None, gives ``default``."""
    if config is None:
        return default
    getter = getattr(config, "get", None)
    if callable(getter):
        try:
            value = getter(key, default)
        except Exception:  # a structured config without the key
            value = default
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def _whiten_unbiased(advantages, mask):
    """verl's and SkyRL's ``masked_whiten`` (the same computation in both): mean and unbiased
    variance over the valid tokens of the whole batch, ``(x - mean) * rsqrt(var + 1e-8)``.
    Like them, refuses fewer than two valid tokens (the unbiased variance is undefined).
    Masked positions come out 0 (both leave whitened values there that their losses mask)."""
    n = int(torch.count_nonzero(mask))
    if n == 0:
        raise ValueError("At least one element in the mask has to be 1.")
    if n == 1:
        raise ValueError("The sum of the mask is one, which can cause a division by zero.")
    return sae_ext.masked_whiten(advantages, mask, unbiased=True, shift_mean=True, eps=1e-8)


def _package_available(name):
    """True when the top-level package ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self._inner, self._patch = inner, patch

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):  # get_source, get_filename... for tracebacks and inspect
        return getattr(self._inner, name)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after the module ``name`` has been executed, before any
    other module can bind names from it."""

    def __init__(self, name, patch):
        self.name, self._patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, self._patch)
        return spec


def _patch_when_imported(name, patch):
    """``patch(module)`` now if the module ``name`` is imported, else as soon as it is (the
    frameworks import their trainers lazily, often in another process). Asked again before
    the import, it adds no second hook; after it, it patches again, so ``patch`` must be
    idempotent."""
    module = sys.modules.get(name)
    if module is not None:
        patch(module)
    elif not _patch_pending(name):
        sys.meta_path.insert(0, _PatchAfterImport(name, patch))


def _patch_pending(name):
    return any(isinstance(f, _PatchAfterImport) and f.name == name for f in sys.meta_path)
