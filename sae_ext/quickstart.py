"""Quickstart: SAE and GAE advantages for a small sample batch, printed next to their inputs.

    python -m sae_ext.quickstart [--device cuda]

It checks its inputs first with sae_ext.check_inputs, which you can call the same way on
your first batches: the ops check shapes, dtypes and devices but not values, so
probabilities passed where log-probs belong would silently turn SAE into GAE with
lam = lam_inner. The last lines show what check_inputs says to that.
"""
from __future__ import annotations

import argparse
import math

import torch

import sae_ext


def sample_batch(device: str = "cpu"):
    """Three responses of up to 10 tokens: a verifiable reward (1 = correct) on each last
    token, a critic's values, the sampling policy's log-probs, and a mask with padding and
    (row 2) two tool-output tokens that are not actions."""
    probs = torch.tensor([
        [0.9, 0.95, 0.1, 0.9, 0.99, 0.97, 0.15, 0.9, 0.95, 0.99],
        [0.99, 0.98, 0.97, 0.05, 0.9, 0.9, 0.99, 1.0, 1.0, 1.0],
        [0.95, 0.12, 0.9, 1.0, 1.0, 0.9, 0.08, 0.9, 0.99, 0.9],
    ])
    values = torch.tensor([
        [0.5, 0.5, 0.6, 0.7, 0.7, 0.7, 0.8, 0.85, 0.9, 0.9],
        [0.4, 0.4, 0.4, 0.3, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0],
        [0.5, 0.6, 0.6, 0.0, 0.0, 0.5, 0.3, 0.4, 0.5, 0.6],
    ])
    mask = torch.tensor([
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # a shorter response: trailing padding
        [1, 1, 1, 0, 0, 1, 1, 1, 1, 1],  # tokens 3-4: a tool's output, not the policy's
    ], dtype=torch.bool)
    rewards = torch.zeros(3, 10)
    rewards[0, 9] = 1.0  # correct
    rewards[1, 6] = 0.0  # wrong
    rewards[2, 9] = 1.0  # correct
    to = lambda t: t.to(device)  # noqa: E731
    return to(rewards), to(values), to(probs.log()), to(mask)


def _row(label: str, xs, fmt: str = "{:7.3f}") -> str:
    return f"  {label:<15}" + "".join(fmt.format(x) for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rewards, values, logprobs, mask = sample_batch(args.device)

    # Values, not shapes: catches probabilities passed as log-probs, NaNs and infinities.
    sae_ext.check_inputs(rewards, values, logprobs, mask)
    sae_adv, sae_ret = sae_ext.advantages(rewards, values, logprobs, mask, lam=0.5, threshold=0.2)
    gae_adv, _ = sae_ext.gae(rewards, values, mask, lam=0.95)
    starts = sae_ext.segment_boundaries(logprobs, mask, threshold=0.2)

    print(f"sae_ext {sae_ext.__version__} on {args.device}; gamma = 1, SAE lam = 0.5 (lam_inner = 1, "
          "p = 0.2), GAE lam = 0.95")
    print("Per response: the inputs (the policy's probability exp(logprob) of each sampled token, the\n"
          "critic's value, the reward, the mask), then the outputs; '|' marks a segment start\n"
          "(probability < p), '.' an action inside a segment, '-' a token that is not an action\n"
          "(mask 0), whose outputs are 0. Each row's SAE advantages can be checked by hand from\n"
          "the rows above them (docs/semantics.md).")
    cpu = [t.cpu() for t in (rewards, values, logprobs, mask, starts, sae_adv, sae_ret, gae_adv)]
    for b in range(rewards.shape[0]):
        r, v, lp, m, s, a, ret, g = (t[b].tolist() for t in cpu)
        marks = ["|" if st else ("." if ok else "-") for st, ok in zip(s, m)]
        print(f"\nresponse {b}")
        print(_row("token", range(len(r)), "{:>7d}"))
        print(_row("segment start", marks, "{:>7}"))
        print(_row("probability", [math.exp(x) for x in lp]))
        print(_row("value V", v))
        print(_row("reward r", r))
        print(_row("SAE advantage", a))
        print(_row("SAE return", ret))
        print(_row("GAE advantage", g))
    whitened = sae_ext.masked_whiten(sae_adv, mask)
    print(f"\nwhitened SAE advantages (valid tokens, unbiased variance): mean {whitened[mask].mean():.3f}, "
          f"std {whitened[mask].std():.3f}")
    try:
        sae_ext.check_inputs(rewards, values, logprobs.exp(), mask)
    except ValueError as e:
        print(f"\nsae_ext.check_inputs with probabilities where log-probs belong:\n  {e}")


if __name__ == "__main__":
    main()
