"""Shared test helpers: random rollouts shaped like real ones, and the flash-attention-style
error criterion (a kernel's error against the float64 reference must be within a small
multiple of what a same-precision PyTorch implementation of the contract incurs)."""
from __future__ import annotations

import glob
import math
import os

import pytest
import torch

import sae_ext
import sae_ext.info
from sae_ext import reference

# The test hooks (torch.ops.sae._warp_emulated_*) live in a library of their own that source
# builds make (SAE_BUILD_TESTING=1, the default) and wheels leave out.
TESTING_LIBRARY = next(iter(glob.glob(os.path.join(os.path.dirname(sae_ext.__file__), "_testing*.so"))), None)
if TESTING_LIBRARY is not None:
    torch.ops.load_library(TESTING_LIBRARY)

# CPU-only builds register CUDA kernels too (ones that say the build has none), so ask the build.
HAS_CUDA_KERNELS = torch.cuda.is_available() and sae_ext.info.build_info()["cuda_kernels"]


def make_rollout(B, T, *, dtype=torch.float32, mask_dtype=torch.bool, seed=0, device="cpu",
                 mask_kind="mixed", reward_kind="sparse"):
    """rewards, values, logprobs, mask, bootstrap for a batch of B responses of length T.

    mask_kind "mixed" cycles rows through: full, trailing padding, holes (multi-turn
    observation tokens), all masked."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, T, generator=g)
    if reward_kind == "sparse":  # RLVR: a verifiable reward on each row's last token
        rewards = torch.zeros(B, T)
    else:
        rewards = torch.randn(B, T, generator=g)
    probs = torch.rand(B, T, generator=g) ** 0.3  # mostly confident, some low-probability tokens
    logprobs = probs.clamp_min(1e-6).log()
    mask = torch.ones(B, T, dtype=torch.bool)
    if mask_kind == "mixed":
        for b in range(B):
            kind = b % 4
            if kind == 1:
                mask[b, int(torch.randint(0, T + 1, (1,), generator=g)):] = False
            elif kind == 2:
                mask[b] = torch.rand(T, generator=g) > 0.3
            elif kind == 3 and B > 3:
                mask[b] = False
    elif mask_kind == "random":
        mask = torch.rand(B, T, generator=g) > 0.3
    if reward_kind == "sparse":
        for b in range(B):
            idx = mask[b].nonzero()
            if len(idx):
                rewards[b, idx[-1, 0]] = float(torch.randint(0, 2, (1,), generator=g))
    bootstrap = torch.randn(B, generator=g)
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return (cast(rewards), cast(values), cast(logprobs), mask.to(device=device, dtype=mask_dtype),
            cast(bootstrap))


def assert_close_to_reference(got, want64, same_precision, *, factor=4.0, atol=1e-6, what=""):
    """flash-attention's criterion: |got - ref64| <= factor * |same_precision - ref64| + atol * scale."""
    scale = max(1.0, want64.abs().max().item()) if want64.numel() else 1.0
    err = (got.double() - want64).abs().max().item() if got.numel() else 0.0
    base = (same_precision.double() - want64).abs().max().item() if got.numel() else 0.0
    bound = factor * base + atol * scale
    assert err <= bound, f"{what}: error {err:.3g} > {factor} x same-precision error {base:.3g} + {atol * scale:.3g}"


def check_against_reference(op_out, args, *, factor=4.0, what=""):
    """op_out: (advantages, returns) from a kernel; args: the reference's positional args."""
    adv, ret = op_out
    want = reference.advantages(*args)
    if adv.dtype == torch.float64:
        for g, w in zip((adv, ret), want):
            scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
            assert (g - w).abs().max().item() <= 1e-12 * scale * math.sqrt(w.shape[-1] + 1), what
        return
    same = reference.advantages(*args, dtype=torch.float32)
    for g, w, s, name in zip((adv, ret), want, same, ("advantages", "returns")):
        assert_close_to_reference(g, w, s, factor=factor, what=f"{what} {name}")


cuda = pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and a CUDA build")
