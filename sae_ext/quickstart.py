"""Quickstart: SAE and GAE advantages for a small sample batch, printed.

    python -m sae_ext.quickstart [--device cuda]
"""
from __future__ import annotations

import argparse

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rewards, values, logprobs, mask = sample_batch(args.device)

    sae_adv, sae_ret = sae_ext.advantages(rewards, values, logprobs, mask, lam=0.5, threshold=0.2)
    gae_adv, _ = sae_ext.gae(rewards, values, mask, lam=0.95)
    starts = sae_ext.segment_boundaries(logprobs, mask, threshold=0.2)

    torch.set_printoptions(precision=3, sci_mode=False, linewidth=120)
    print(f"sae_ext {sae_ext.__version__} on {args.device}; gamma = 1, SAE lam = 0.5 (lam_inner = 1, p = 0.2), "
          "GAE lam = 0.95\n")
    for b in range(rewards.shape[0]):
        marks = "".join("|" if s else ("." if m else " ") for s, m in zip(starts[b].tolist(), mask[b].tolist()))
        print(f"response {b}: segment starts  {marks}   ('|' starts a segment, ' ' not an action)")
        print(f"  SAE advantages  {sae_adv[b].cpu()}")
        print(f"  SAE returns     {sae_ret[b].cpu()}")
        print(f"  GAE advantages  {gae_adv[b].cpu()}")
    whitened = sae_ext.masked_whiten(sae_adv, mask)
    print(f"\nwhitened SAE advantages (valid tokens, unbiased variance): mean {whitened[mask].mean():.3f}, "
          f"std {whitened[mask].std():.3f}")


if __name__ == "__main__":
    main()
