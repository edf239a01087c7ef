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

__all__ = ["areal", "nemo_rl", "openrlhf", "skyrl", "slime", "trl", "verl"]

