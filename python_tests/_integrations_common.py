"""Shared helpers for python_tests/test_integrations_*.py: random PPO batches, a float64
whitening loop, verl's command-line overrides. The oracle is sae_ext.reference; the
framework-style loops are sae_ext.testing.framework_loops."""
from __future__ import annotations

import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The verl command-line overrides docs/integrations.md gives (tested in
# test_integrations_verl.py against verl's own config, and checked to be in the docs).
VERL_OVERRIDES = ["algorithm.adv_estimator=sae", "algorithm.lam=0.95", "critic.enable=True"]
VERL_OPTIONAL_OVERRIDES = ["+algorithm.sae_threshold=0.2", "+algorithm.sae_lam_inner=1.0"]


def random_batch(B=6, T=40, *, seed=0, holes=False, p_low=0.15, empty_row=True):
    """rewards, values, logprobs, mask (float 0/1) for a [B, T] batch: responses of random
    lengths with trailing padding, optionally with holes (masked runs between valid tokens,
    like tool/observation tokens), one all-padding row when ``empty_row``. The reward sits on
    each row's last valid token plus a small per-token term; about ``p_low`` of the tokens
    have probability < 0.2."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for b in range(B):
        n = int(torch.randint(2, T + 1, (1,), generator=g))
        mask[b, :n] = 1
        if holes and n > 6:
            start = int(torch.randint(1, n - 3, (1,), generator=g))
            length = int(torch.randint(1, 4, (1,), generator=g))
            mask[b, start:min(start + length, n - 1)] = 0
    if empty_row and B > 1:
        mask[B - 1] = 0
    values = torch.randn(B, T, generator=g)
    rewards = 0.05 * torch.randn(B, T, generator=g)
    for b in range(B):
        idx = torch.nonzero(mask[b]).flatten()
        if len(idx):
            rewards[b, idx[-1]] += float(torch.randint(0, 2, (1,), generator=g))
    low = torch.rand(B, T, generator=g) < p_low
    probs = torch.where(low, 0.01 + 0.18 * torch.rand(B, T, generator=g),
                        0.21 + 0.79 * torch.rand(B, T, generator=g))
    logprobs = probs.log()
    return rewards, values, logprobs, mask


def whiten_loop(x, mask, *, unbiased, eps=1e-8):
    """Mean and variance over the valid entries of the whole batch, float64."""
    sel = x.double()[mask != 0]
    n = sel.numel()
    mean = sel.sum() / n
    var = ((sel - mean) ** 2).sum() / (n - 1 if unbiased else n)
    return (x.double() - mean) / torch.sqrt(var + eps)


def subprocess_env(**extra):
    """Environment for a child Python that imports the same sae_ext as this process (the
    checkout's build or an installed wheel). Run the child outside the checkout (cwd), or
    the checkout's sae_ext/ would come first."""
    import sae_ext

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(sae_ext.__file__)))]
    env = dict(os.environ)
    paths += [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env
