"""Drop-ins for the PPO frameworks people use.

- :mod:`sae_ext.integrations.verl`: verl's ``compute_gae_advantage_return`` and an ``"sae"``
  advantage estimator registered in verl's own registry (``algorithm.adv_estimator=sae``).
- :mod:`sae_ext.integrations.openrlhf`: OpenRLHF's ``get_advantages_and_returns`` and its SAE
  variant.
- :mod:`sae_ext.integrations.trl`: TRL's PPO advantage block (GAE, then whitening) and its SAE
  variant.

Each submodule is imported on its own (``import sae_ext.integrations.verl``); this package
imports none of them, so nothing here imports a framework. None of the submodules needs its
framework installed to compute: only the verl registration does, and it is skipped when verl
is absent. See docs/integrations.md.
"""

__all__ = ["openrlhf", "trl", "verl"]
