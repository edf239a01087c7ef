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


def required(op, name, t):
    """A Tensor (not Tensor?) argument of the schema given as None."""
    torch._check(t is not None, lambda: f"{op}: `{name}` is required, got None")


def rows(op, name, t, packed=False):
    """2-D [B, T], or 1-D [N] for packed rows (with cu_seqlens)."""
    if not packed:
        return two_d(op, name, t)
    torch._check(t.dim() == 1, lambda: f"{op}: `{name}` must be 1-D [N] when `cu_seqlens` is "
                 f"given, got {t.dim()}-D with shape {_shape(t.shape)}")


def like(op, name, t, ref_name, ref, packed=False):
    """The layout of `ref` (2-D, or 1-D when packed), its shape, on its device."""
    rows(op, name, t, packed)
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


def per_row(op, name, t, B, ref_name, ref):
    """A [B] float vector (bootstrap, per-row lambdas) on the inputs' device."""
    torch._check(t.dim() == 1 and t.shape[0] == B,
                 lambda: f"{op}: `{name}` must be 1-D with one value per row [{B}], got shape "
                 f"{_shape(t.shape)}")
    float_dtype(op, name, t)
    same_device(op, name, t, ref_name, ref)


def cu_seqlens_like(op, cu, ref_name, ref):
    """Shape, dtype and device of cu_seqlens; returns B. Its values (starts at 0, non-decreasing,
    ends at N) are checked by the CPU launcher, which can read them for free."""
    torch._check(cu.dim() == 1 and cu.shape[0] >= 1, lambda: f"{op}: `cu_seqlens` must be 1-D "
                 f"[B + 1] (row offsets, starting at 0), got shape {_shape(cu.shape)}")
    torch._check(cu.dtype in (torch.int32, torch.int64), lambda: f"{op}: `cu_seqlens` must be "
                 f"int32 or int64, got {_dtype(cu.dtype)}")
    same_device(op, "cu_seqlens", cu, ref_name, ref)
    return cu.shape[0] - 1


def out_like(op, name, out, ref, dtype):
    torch._check(out.shape == ref.shape, lambda: f"{op}: `{name}` must have the shape of the "
                 f"inputs {_shape(ref.shape)}, got {_shape(out.shape)}")
    torch._check(out.dtype == dtype, lambda: f"{op}: `{name}` must be {_dtype(dtype)} (the op's "
                 f"output dtype for these inputs), got {_dtype(out.dtype)}")
    torch._check(out.is_contiguous(), lambda: f"{op}: `{name}` must be contiguous")
    same_device(op, name, out, "rewards", ref)


def _variants(op, B, ref_name, ref, lam_rows, lam_inner_rows, lam_critic_rows):
    # Named as the Python API names them (a [B] `lam` reaches the op as lam_rows).
    for name, t in (("lam", lam_rows), ("lam_inner", lam_inner_rows),
                    ("lam_critic", lam_critic_rows)):
        if t is not None:
            per_row(op, name, t, B, ref_name, ref)


def accumulation_dtype(*tensors) -> torch.dtype:
    """float64 if any of the data tensors given is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) \
        else torch.float32


# Each op's sequence, in its launcher's order. --------------------------------------------------
def check_forward(op, rewards, values, cut, cut_is_logprobs, mask, bootstrap: Optional[torch.Tensor],
                  gamma, lam, lam_inner, threshold, lam_rows=None, lam_inner_rows=None,
                  lam_critic=None, lam_critic_rows=None, cu_seqlens=None, out_advantages=None,
                  out_returns=None):
    """advantages (cut = log-probs, may be None) and advantages_from_boundaries (cut = bool
    starts), with the variants' arguments."""
    packed = cu_seqlens is not None
    required(op, "rewards", rewards)
    required(op, "values", values)
    rows(op, "rewards", rewards, packed)
    float_dtype(op, "rewards", rewards)
    like(op, "values", values, "rewards", rewards, packed)
    float_dtype(op, "values", values)
    cut_name = "logprobs" if cut_is_logprobs else "boundaries"
    if cut is not None:
        like(op, cut_name, cut, "rewards", rewards, packed)
        (float_dtype if cut_is_logprobs else bool_dtype)(op, cut_name, cut)
    if mask is not None:
        like(op, "mask", mask, "rewards", rewards, packed)
        mask_dtype(op, mask)
    B = cu_seqlens_like(op, cu_seqlens, "rewards", rewards) if packed else rewards.shape[0]
    if bootstrap is not None:
        per_row(op, "bootstrap", bootstrap, B, "rewards", rewards)
    unit_interval(op, gamma=gamma, lam=lam, lam_inner=lam_inner)
    if cut_is_logprobs and cut is not None:
        unit_interval(op, threshold=threshold)
    if lam_critic is not None:
        unit_interval(op, lam_critic=lam_critic)
    _variants(op, B, "rewards", rewards, lam_rows, lam_inner_rows, lam_critic_rows)
    dt = accumulation_dtype(rewards, values, cut if cut_is_logprobs else None, bootstrap)
    if out_advantages is not None:
        out_like(op, "out_advantages", out_advantages, rewards, dt)
    if out_returns is not None:
        out_like(op, "out_returns", out_returns, rewards, dt)
    return dt


def check_adjoint(op, grad_advantages, grad_returns, mask, logprobs, boundaries,
                  gamma, lam, lam_inner, threshold, lam_rows=None, lam_inner_rows=None,
                  cu_seqlens=None):
    """advantages_backward: at most one of logprobs / boundaries; either gradient may be None."""
    packed = cu_seqlens is not None
    required(op, "mask", mask)
    rows(op, "mask", mask, packed)
    mask_dtype(op, mask)
    torch._check(logprobs is None or boundaries is None,
                 lambda: f"{op}: pass at most one of `logprobs` and `boundaries`")
    if logprobs is not None:
        like(op, "logprobs", logprobs, "mask", mask, packed)
        float_dtype(op, "logprobs", logprobs)
    elif boundaries is not None:
        like(op, "boundaries", boundaries, "mask", mask, packed)
        bool_dtype(op, "boundaries", boundaries)
    for name, g in (("grad_advantages", grad_advantages), ("grad_returns", grad_returns)):
        if g is not None:
            like(op, name, g, "mask", mask, packed)
            float_dtype(op, name, g)
    B = cu_seqlens_like(op, cu_seqlens, "mask", mask) if packed else mask.shape[0]
    unit_interval(op, gamma=gamma, lam=lam, lam_inner=lam_inner)
    if logprobs is not None:
        unit_interval(op, threshold=threshold)
    _variants(op, B, "mask", mask, lam_rows, lam_inner_rows, None)
    return B


def check_segmentation(op, logprobs, mask, threshold):
    required(op, "logprobs", logprobs)
    required(op, "mask", mask)
    two_d(op, "logprobs", logprobs)
    float_dtype(op, "logprobs", logprobs)
    like(op, "mask", mask, "logprobs", logprobs)
    mask_dtype(op, mask)
    unit_interval(op, threshold=threshold)
