"""Shared helpers for python_tests/test_integrations_*.py: random PPO batches, the SAE oracle
(sae_ext.reference) for frameworks whose steps and segment starts differ, a float64
whitening loop, shared tolerances, verl's command-line overrides. The framework-style loops
are sae_ext.testing.framework_loops and python_tests/_framework_sources.py."""
from __future__ import annotations

import os
import sys

import torch

from sae_ext import reference

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The tolerance of the integration tests: float32 ops against float64 loops over ~50 tokens.
ATOL = 2e-5
#: Every mask dtype the frameworks hand over.
MASK_DTYPES = [torch.float32, torch.int64, torch.bool]

# The verl command-line overrides docs/integrations.md gives (tested in
# test_integrations_verl.py against verl's own config, and checked to be in the docs).
VERL_OVERRIDES = ["algorithm.adv_estimator=sae", "algorithm.lam=0.95", "critic.enable=True"]
VERL_OPTIONAL_OVERRIDES = ["+algorithm.sae_threshold=0.2", "+algorithm.sae_lam_inner=1.0"]


def random_batch(B=6, T=40, *, seed=0, holes=False, p_low=0.15, empty_row=True, prefix=0,
                 padding_rewards=True):
    """rewards, values, logprobs, mask (float 0/1) for a [B, T] batch: per row an optional
    masked prefix of ``prefix`` positions (a prompt), a response of random length, trailing
    padding, optionally holes (masked runs between valid tokens, like tool/observation
    tokens), one all-padding row when ``empty_row``. The reward sits on each row's last valid
    token plus a small per-token term, which ``padding_rewards=False`` keeps off the masked
    positions. Values are nonzero everywhere, padding included, as a critic's outputs are.
    About ``p_low`` of the tokens have probability < 0.2."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for b in range(B):
        n = int(torch.randint(2, T - prefix + 1, (1,), generator=g))
        mask[b, prefix:prefix + n] = 1
        if holes and n > 6:
            start = prefix + int(torch.randint(1, n - 3, (1,), generator=g))
            length = int(torch.randint(1, 4, (1,), generator=g))
            mask[b, start:min(start + length, prefix + n - 1)] = 0
    if empty_row and B > 1:
        mask[B - 1] = 0
    values = torch.randn(B, T, generator=g)
    rewards = 0.05 * torch.randn(B, T, generator=g)
    if not padding_rewards:
        rewards = rewards * mask
    for b in range(B):
        idx = torch.nonzero(mask[b]).flatten()
        if len(idx):
            rewards[b, idx[-1]] += float(torch.randint(0, 2, (1,), generator=g))
    low = torch.rand(B, T, generator=g) < p_low
    probs = torch.where(low, 0.01 + 0.18 * torch.rand(B, T, generator=g),
                        0.21 + 0.79 * torch.rand(B, T, generator=g))
    logprobs = probs.log()
    return rewards, values, logprobs, mask


def sae_oracle(rewards, values, logprobs, steps, starts_mask, gamma, lam, lam_inner, threshold,
               bootstrap=None):
    """sae_ext.reference (float64, on the CPU) where the positions that are steps (``steps``)
    and those that may start a segment (``starts_mask`` with log-prob < log(threshold)) differ,
    as in frameworks whose loop runs through positions their loss ignores. ``lam`` float or
    [B]; ``bootstrap`` [B], the value after each row's last step."""
    cpu = [x.cpu() for x in (rewards, values, logprobs, steps, starts_mask)]
    r, v, lp, st, sm = cpu
    starts = reference.segment_boundaries(lp, sm, threshold)
    lam = lam.double().cpu() if isinstance(lam, torch.Tensor) else lam
    boot = None if bootstrap is None else bootstrap.double().cpu()
    return reference.advantages_from_boundaries(r, v, starts, st, gamma, lam, lam_inner, boot)


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
