"""check_inputs: the value checks the ops do not make (they check shapes, dtypes and devices;
the values they take as given)."""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from . import _validation

_OP = "sae_ext.check_inputs"


def check_inputs(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    mask: Tensor,
    *,
    bootstrap: Optional[Tensor] = None,
    max_logprob: float = 1e-3,
    warn: bool = False,
) -> None:
    """Checks a batch before :func:`sae_ext.advantages`; raises ``ValueError`` naming the
    argument (or, with ``warn=True``, warns and returns).

    What it catches, on valid tokens (``mask != 0``) only:

    - ``logprobs`` above ``max_logprob``: log-probabilities are <= 0, so positive ones are
      almost always probabilities passed by mistake. With probabilities no token falls
      below log(threshold), nothing starts a segment, and SAE silently becomes GAE with
      ``lam = lam_inner`` (Monte Carlo returns for ``lam_inner = 1``). The default tolerance
      lets through the tiny positive values some inference engines report for certain tokens.
    - NaN in ``logprobs`` (a NaN never starts a segment), NaN or infinite ``rewards``,
      ``values`` and ``bootstrap``.

    Shapes, dtypes and devices are checked by the same rules as the ops (``RuntimeError``).
    Cost: a few elementwise passes and reductions over [B, T], and one synchronization with
    the device to read the counts: call it on the first batches or in a debug mode, not on
    every step of a tuned loop.
    """
    _validation.check_forward(_OP, rewards, values, logprobs, True, mask, bootstrap,
                              0.0, 0.0, 0.0, 0.0)
    valid = mask != 0
    problems = []
    n_valid = int(valid.sum())

    def count(bad: Tensor) -> int:
        return int((bad & valid).sum())

    lp = logprobs.float() if logprobs.dtype != torch.float64 else logprobs
    n_pos = count(lp > max_logprob)
    if n_pos:
        largest = float(lp.masked_fill(~valid, float("-inf")).max())
        problems.append(
            f"`logprobs` is above {max_logprob:g} on {n_pos} of {n_valid} valid tokens (largest "
            f"{largest:.4g}): these look like probabilities; pass log-probabilities "
            f"(e.g. torch.log(p)). With probabilities no token starts a segment and SAE "
            f"becomes GAE with lam = lam_inner")
    n_nan = count(lp.isnan())
    if n_nan:
        problems.append(f"`logprobs` is NaN on {n_nan} of {n_valid} valid tokens (a NaN "
                        f"never starts a segment)")
    for name, t in (("rewards", rewards), ("values", values)):
        n_bad = count(~torch.isfinite(t))
        if n_bad:
            problems.append(f"`{name}` is NaN or infinite on {n_bad} of {n_valid} valid tokens")
    if bootstrap is not None:
        n_bad = int((~torch.isfinite(bootstrap)).sum())
        if n_bad:
            problems.append(f"`bootstrap` is NaN or infinite in {n_bad} of {bootstrap.shape[0]} rows")
    if not problems:
        return
    text = f"{_OP}: " + "; ".join(problems)
    if warn:
        warnings.warn(text, stacklevel=2)
    else:
        raise ValueError(text)
