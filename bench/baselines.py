"""What the benchmark compares torch.ops.sae against.

Each takes the same inputs (rewards, values, logprobs, mask as [B, T] tensors; gamma, lam,
lam_inner, threshold) and returns (advantages, returns) in float32. The verl- and
OpenRLHF-style loops are sae_ext.testing.framework_loops' (the ones the tests hold the ops
and integrations to); TorchRL's function and the numba loops are here. None is copied from
the frameworks they are named after. With a mask that is a valid prefix per row (trailing
padding only, as the benchmark uses), all of them compute the contract's values; only the
`verl_style` loop and the numba loops also follow the contract across holes in the mask
(observation tokens).
"""
from __future__ import annotations

import torch

from sae_ext.reference import log_threshold
from sae_ext.testing import framework_loops as loops
from sae_ext.testing.framework_loops import boundaries, next_token_lambda


def _starts(logprobs, mask, lam, lam_inner, threshold):
    """SAE's segment starts (float32 comparison), or None in GAE mode (lam == lam_inner)."""
    return boundaries(logprobs, mask, threshold) if lam != lam_inner else None


def verl_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
    """sae_ext.testing.framework_loops.verl_loop in float32."""
    return loops.verl_loop(rewards, values, mask, gamma, lam, lam_inner=lam_inner,
                           boundaries=_starts(logprobs, mask, lam, lam_inner, threshold))


def openrlhf_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
    """sae_ext.testing.framework_loops.openrlhf_loop in float32."""
    return loops.openrlhf_loop(rewards, values, mask, gamma, lam, lam_inner=lam_inner,
                               boundaries=_starts(logprobs, mask, lam, lam_inner, threshold))


def torchrl_gae():
    """TorchRL's generalized_advantage_estimate with a per-token lambda tensor, or None
    with the reason it cannot be imported."""
    try:
        from torchrl.objectives.value.functional import generalized_advantage_estimate
    except Exception as e:  # noqa: BLE001 - any import failure means: skip
        return None, f"torchrl not importable ({type(e).__name__}: {e})"

    def torchrl_style(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
        valid = mask != 0
        m = valid.float()
        r, v = rewards.float() * m, values.float() * m
        B, T = r.shape
        next_v = torch.zeros_like(v)
        next_v[:, :-1] = v[:, 1:]
        done = torch.ones_like(valid)
        done[:, :-1] = ~valid[:, 1:]  # the last valid token ends the trajectory
        sae = lam != lam_inner
        lmbda = (next_token_lambda(boundaries(logprobs, mask, threshold), lam, lam_inner).unsqueeze(-1)
                 if sae else lam)
        adv, target = generalized_advantage_estimate(
            gamma, lmbda, v.unsqueeze(-1), next_v.unsqueeze(-1), r.unsqueeze(-1),
            done.unsqueeze(-1), done.unsqueeze(-1), time_dim=-2)
        return adv.squeeze(-1), target.squeeze(-1) * m

    return torchrl_style, None


def numba_kernel(parallel: bool):
    """The contract's recursion as a numba kernel over float32 numpy arrays, written plainly
    (prange over rows when `parallel`): kernel(r, v, lp, m, gamma, lam, lam_inner, log_p, sae,
    adv, ret) fills adv and ret. Raises ImportError without numba."""
    import numpy as np
    from numba import njit, prange

    rng = prange if parallel else range

    @njit(parallel=parallel, cache=False)
    def kernel(r, v, lp, m, gamma, lam, lam_inner, log_p, sae, adv, ret):
        B, T = r.shape
        for b in rng(B):
            nv = np.float32(0.0)
            na = np.float32(0.0)
            nb = False
            for t in range(T - 1, -1, -1):
                if m[b, t]:
                    delta = r[b, t] + gamma * nv - v[b, t]
                    lam_t = lam if nb else lam_inner
                    a = delta + gamma * lam_t * na
                    adv[b, t] = a
                    ret[b, t] = a + v[b, t]
                    nv = v[b, t]
                    na = a
                    nb = sae and lp[b, t] < log_p
                else:
                    adv[b, t] = np.float32(0.0)
                    ret[b, t] = np.float32(0.0)

    return kernel


def numba_loops():
    """(serial, prange) numba implementations of the contract's recursion over float32
    numpy arrays, or (None, None, reason)."""
    try:
        import numba
        import numpy as np
    except Exception as e:  # noqa: BLE001
        return None, None, f"numba not importable ({type(e).__name__}: {e})"

    def make(parallel):
        kernel = numba_kernel(parallel)

        def run(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
            r = rewards.float().numpy()
            v = values.float().numpy()
            lp = logprobs.float().numpy()
            m = (mask != 0).numpy()
            B, T = r.shape
            adv = np.empty((B, T), np.float32)
            ret = np.empty((B, T), np.float32)
            log_p = np.float32(log_threshold(threshold))
            kernel(r, v, lp, m, np.float32(gamma), np.float32(lam), np.float32(lam_inner),
                   log_p, lam != lam_inner, adv, ret)
            return torch.from_numpy(adv), torch.from_numpy(ret)

        return run

    return make(False), make(True), f"numba {numba.__version__}"
