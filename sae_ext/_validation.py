"""The ops' argument rules, stated once for the Python side (the fake/Meta kernels).

The C++ launchers (csrc/sae_checks.cpp) enforce the same rules for real tensors. The two can
not share code, so they share wording instead: every message here is written to be the C++
message letter for letter (dtypes by their c10 names, shapes as `[3, 5]`, numbers as C++
streams a double), and python_tests/test_validation_parity.py runs the whole bad-input table
through both paths and requires identical text. Check order matters too (the first failing
rule is the one reported), so each `check_*` entry point below follows its launcher's order.
"""
from __future__ import annotations

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MASK_DTYPES = FLOAT_DTYPES + (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                              torch.int64)

# c10::ScalarType's names, which is how the C++ checks print a dtype.
_C10_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
    torch.bfloat16: "BFloat16", torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char",
    torch.int16: "Short", torch.int32: "Int", torch.int64: "Long",
    torch.complex32: "ComplexHalf", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _dtype(dt: torch.dtype) -> str:
    return _C10_NAMES.get(dt, str(dt).replace("torch.", ""))


def _shape(shape) -> str:
    """c10::IntArrayRef's format: [3, 5]."""
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _number(x: float) -> str:
    """std::ostream's default format for a double (%g, 6 significant digits)."""
    return f"{x:g}"


# One rule each. -----------------------------------------------------------------------------
def two_d(op, name, t):
    torch._check(t.dim() == 2, lambda: f"{op}: `{name}` must be 2-D [B, T], got {t.dim()}-D "
                 f"with shape {_shape(t.shape)}")


def like(op, name, t, ref_name, ref):
    """2-D, the shape of `ref`, on `ref`'s device."""
    two_d(op, name, t)
    torch._check(t.shape == ref.shape, lambda: f"{op}: `{name}` must have the shape of "
                 f"`{ref_name}` {_shape(ref.shape)}, got {_shape(t.shape)}")
    same_device(op, name, t, ref_name, ref)


def same_device(op, name, t, ref_name, ref):
    torch._check(t.device == ref.device, lambda: f"{op}: `{name}` is on {t.device} but "
                 f"`{ref_name}` is on {ref.device}; all tensors must be on one device")


def float_dtype(op, name, t):
    torch._check(t.dtype in FLOAT_DTYPES, lambda: f"{op}: `{name}` must be float32, float64, "
                 f"bfloat16 or float16, got {_dtype(t.dtype)}")


def mask_dtype(op, mask):
    torch._check(mask.dtype in MASK_DTYPES, lambda: f"{op}: `mask` must be bool, an integer "
                 f"dtype or float16/bfloat16/float32/float64, got {_dtype(mask.dtype)}")


def bool_dtype(op, name, t):
    torch._check(t.dtype == torch.bool, lambda: f"{op}: `{name}` must be a bool tensor, got "
                 f"{_dtype(t.dtype)}")


def unit_interval(op, **values):
    for name, x in values.items():
        torch._check(0.0 <= x <= 1.0, lambda: f"{op}: `{name}` must be in [0, 1], got {_number(x)}")


def bootstrap_like(op, bootstrap, rewards):
    torch._check(bootstrap.dim() == 1 and bootstrap.shape[0] == rewards.shape[0],
                 lambda: f"{op}: `bootstrap` must be 1-D with one value per row "
                 f"[{rewards.shape[0]}], got shape {_shape(bootstrap.shape)}")
    float_dtype(op, "bootstrap", bootstrap)
    same_device(op, "bootstrap", bootstrap, "rewards", rewards)


# Each op's sequence, in its launcher's order. --------------------------------------------------
def check_forward(op, rewards, values, cut, cut_is_logprobs, mask, bootstrap: Optional[torch.Tensor],
                  gamma, lam, lam_inner, threshold):
    """advantages (cut = log-probs) and advantages_from_boundaries (cut = bool starts)."""
    two_d(op, "rewards", rewards)
    float_dtype(op, "rewards", rewards)
    like(op, "values", values, "rewards", rewards)
    float_dtype(op, "values", values)
    cut_name = "logprobs" if cut_is_logprobs else "boundaries"
    like(op, cut_name, cut, "rewards", rewards)
    (float_dtype if cut_is_logprobs else bool_dtype)(op, cut_name, cut)
    like(op, "mask", mask, "rewards", rewards)
    mask_dtype(op, mask)
    if bootstrap is not None:
        bootstrap_like(op, bootstrap, rewards)
    unit_interval(op, gamma=gamma, lam=lam, lam_inner=lam_inner)
    if cut_is_logprobs:
        unit_interval(op, threshold=threshold)


def check_adjoint(op, grad_advantages, grad_returns, mask, logprobs, boundaries,
                  gamma, lam, lam_inner, threshold):
    """advantages_backward: exactly one of logprobs / boundaries; either gradient may be None."""
    two_d(op, "mask", mask)
    mask_dtype(op, mask)
    torch._check((logprobs is None) != (boundaries is None),
                 lambda: f"{op}: pass exactly one of `logprobs` and `boundaries`")
    if logprobs is not None:
        like(op, "logprobs", logprobs, "mask", mask)
        float_dtype(op, "logprobs", logprobs)
    else:
        like(op, "boundaries", boundaries, "mask", mask)
        bool_dtype(op, "boundaries", boundaries)
    for name, g in (("grad_advantages", grad_advantages), ("grad_returns", grad_returns)):
        if g is not None:
            like(op, name, g, "mask", mask)
            float_dtype(op, name, g)
    unit_interval(op, gamma=gamma, lam=lam, lam_inner=lam_inner)
    if logprobs is not None:
        unit_interval(op, threshold=threshold)


def check_segmentation(op, logprobs, mask, threshold):
    two_d(op, "logprobs", logprobs)
    float_dtype(op, "logprobs", logprobs)
    like(op, "mask", mask, "logprobs", logprobs)
    mask_dtype(op, mask)
    unit_interval(op, threshold=threshold)
