"""Bad inputs to torch.ops.sae.* and the Python wrappers: each raises an exception whose message
names the offending argument, and none takes the process down (these run in-process, so a
crash would kill pytest: that is the check). Empty inputs are not errors.
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import HAS_CUDA_KERNELS

import sae_ext

ops = torch.ops.sae

B, T = 3, 5


def _base():
    g = torch.Generator().manual_seed(0)
    return dict(
        rewards=torch.randn(B, T, generator=g),
        values=torch.randn(B, T, generator=g),
        logprobs=torch.rand(B, T, generator=g).log(),
        boundaries=torch.rand(B, T, generator=g) < 0.3,
        mask=torch.ones(B, T, dtype=torch.bool),
        gamma=1.0, lam=0.5, lam_inner=1.0, threshold=0.2,
        bootstrap=None,
    )


# Every callee takes overrides of _base()'s arguments and calls one entry point. ------------
def op_advantages(**kw):
    a = {**_base(), **kw}
    return ops.advantages(a["rewards"], a["values"], a["logprobs"], a["mask"], a["gamma"],
                          a["lam"], a["lam_inner"], a["threshold"], a["bootstrap"])


def op_from_boundaries(**kw):
    a = {**_base(), **kw}
    return ops.advantages_from_boundaries(a["rewards"], a["values"], a["boundaries"], a["mask"],
                                          a["gamma"], a["lam"], a["lam_inner"], a["bootstrap"])


def op_segment_boundaries(**kw):
    a = {**_base(), **kw}
    return ops.segment_boundaries(a["logprobs"], a["mask"], a["threshold"])


def py_advantages(**kw):
    a = {**_base(), **kw}
    return sae_ext.advantages(a["rewards"], a["values"], a["logprobs"], a["mask"], lam=a["lam"],
                              gamma=a["gamma"], lam_inner=a["lam_inner"],
                              threshold=a["threshold"], bootstrap=a["bootstrap"])


def py_from_boundaries(**kw):
    a = {**_base(), **kw}
    return sae_ext.advantages_from_boundaries(a["rewards"], a["values"], a["boundaries"],
                                              a["mask"], lam=a["lam"], gamma=a["gamma"],
                                              lam_inner=a["lam_inner"], bootstrap=a["bootstrap"])


def py_segment_boundaries(**kw):
    a = {**_base(), **kw}
    return sae_ext.segment_boundaries(a["logprobs"], a["mask"], threshold=a["threshold"])


def py_gae(**kw):
    a = {**_base(), **kw}
    return sae_ext.gae(a["rewards"], a["values"], a["mask"], gamma=a["gamma"], lam=a["lam"],
                       bootstrap=a["bootstrap"])


# Which callees take which argument.
TAKES = {
    "rewards": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries, py_gae],
    "values": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries, py_gae],
    "logprobs": [op_advantages, py_advantages, op_segment_boundaries, py_segment_boundaries],
    "boundaries": [op_from_boundaries, py_from_boundaries],
    "mask": [op_advantages, op_from_boundaries, op_segment_boundaries, py_advantages,
             py_from_boundaries, py_segment_boundaries, py_gae],
    "bootstrap": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries, py_gae],
    "gamma": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries, py_gae],
    "lam": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries, py_gae],
    "lam_inner": [op_advantages, op_from_boundaries, py_advantages, py_from_boundaries],
    "threshold": [op_advantages, op_segment_boundaries, py_advantages, py_segment_boundaries],
}

# (argument, case id, bad value). A 2-D [B, T] argument is checked against `rewards` (or
# `logprobs` in segment_boundaries), so a shape mismatch on `logprobs` in segment_boundaries
# is reported on `mask` and left out below.
_Z = torch.zeros
BAD_TENSORS = [
    ("rewards", "1d", _Z(B * T)),
    ("rewards", "3d", _Z(B, T, 1)),
    ("rewards", "0d", _Z(())),
    ("rewards", "long", _Z(B, T, dtype=torch.long)),
    ("rewards", "int32", _Z(B, T, dtype=torch.int32)),
    ("rewards", "bool", _Z(B, T, dtype=torch.bool)),
    ("rewards", "complex64", _Z(B, T, dtype=torch.complex64)),
    ("values", "shape_T+1", _Z(B, T + 1)),
    ("values", "shape_B+1", _Z(B + 1, T)),
    ("values", "transposed", _Z(T, B)),
    ("values", "1d", _Z(B * T)),
    ("values", "3d", _Z(B, T, 1)),
    ("values", "long", _Z(B, T, dtype=torch.long)),
    ("values", "int32", _Z(B, T, dtype=torch.int32)),
    ("values", "complex64", _Z(B, T, dtype=torch.complex64)),
    ("values", "complex128", _Z(B, T, dtype=torch.complex128)),
    ("logprobs", "1d", _Z(B * T)),
    ("logprobs", "3d", _Z(B, T, 1)),
    ("logprobs", "long", _Z(B, T, dtype=torch.long)),
    ("logprobs", "int32", _Z(B, T, dtype=torch.int32)),
    ("logprobs", "complex64", _Z(B, T, dtype=torch.complex64)),
    ("boundaries", "shape_T+1", _Z(B, T + 1, dtype=torch.bool)),
    ("boundaries", "shape_B+1", _Z(B + 1, T, dtype=torch.bool)),
    ("boundaries", "3d", _Z(B, T, 1, dtype=torch.bool)),
    ("boundaries", "float32", _Z(B, T)),
    ("boundaries", "uint8", _Z(B, T, dtype=torch.uint8)),
    ("boundaries", "long", _Z(B, T, dtype=torch.long)),
    ("mask", "shape_T+1", torch.ones(B, T + 1)),
    ("mask", "shape_B+1", torch.ones(B + 1, T)),
    ("mask", "shape_T-1", torch.ones(B, T - 1, dtype=torch.bool)),
    ("mask", "1d", torch.ones(B * T)),
    ("mask", "3d", torch.ones(B, T, 1)),
    ("mask", "complex64", torch.ones(B, T, dtype=torch.complex64)),
    ("mask", "complex128", torch.ones(B, T, dtype=torch.complex128)),
    ("bootstrap", "shape_B+1", _Z(B + 1)),
    ("bootstrap", "shape_B-1", _Z(B - 1)),
    ("bootstrap", "shape_Bx1", _Z(B, 1)),
    ("bootstrap", "shape_1xB", _Z(1, B)),
    ("bootstrap", "0d", _Z(())),
    ("bootstrap", "long", _Z(B, dtype=torch.long)),
    ("bootstrap", "int32", _Z(B, dtype=torch.int32)),
    ("bootstrap", "bool", _Z(B, dtype=torch.bool)),
    ("bootstrap", "complex64", _Z(B, dtype=torch.complex64)),
]

BAD_UNIT = [("-0.1", -0.1), ("-tiny", -1e-300), ("1.1", 1.1), ("1+eps", 1.0 + 2.0**-52),
            ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]


def _cases():
    out = []
    for arg, cid, bad in BAD_TENSORS:
        for fn in TAKES[arg]:
            out.append(pytest.param(fn, {arg: bad}, RuntimeError, f"`{arg}`",
                                    id=f"{fn.__name__}-{arg}-{cid}"))
    for arg in ("gamma", "lam", "lam_inner", "threshold"):
        for cid, bad in BAD_UNIT:
            for fn in TAKES[arg]:
                out.append(pytest.param(fn, {arg: bad}, RuntimeError, f"`{arg}`",
                                        id=f"{fn.__name__}-{arg}-{cid}"))
    # Not a float at all: the dispatcher's schema check, which names the argument unquoted.
    for arg in ("gamma", "threshold"):
        for cid, bad in (("str", "0.5"), ("None", None)):
            for fn in (op_advantages, op_segment_boundaries) if arg == "threshold" else (
                    op_advantages, op_from_boundaries):
                out.append(pytest.param(fn, {arg: bad}, RuntimeError, arg,
                                        id=f"{fn.__name__}-{arg}-{cid}"))
    # Validation does not depend on the data: empty tensors with a bad hyperparameter.
    empty = dict(rewards=_Z(0, T), values=_Z(0, T), logprobs=_Z(0, T),
                 boundaries=_Z(0, T, dtype=torch.bool), mask=_Z(0, T))
    for fn in (op_advantages, op_from_boundaries):
        out.append(pytest.param(fn, {**empty, "gamma": 1.5}, RuntimeError, "`gamma`",
                                id=f"{fn.__name__}-empty-gamma"))
    out.append(pytest.param(op_segment_boundaries, {**empty, "threshold": -1.0}, RuntimeError,
                            "`threshold`", id="op_segment_boundaries-empty-threshold"))
    out.append(pytest.param(op_advantages, {**empty, "bootstrap": _Z(1)}, RuntimeError,
                            "`bootstrap`", id="op_advantages-empty-bootstrap"))
    return out


@pytest.mark.parametrize("fn, over, exc, name", _cases())
def test_bad_input_raises_and_names_the_argument(fn, over, exc, name):
    with pytest.raises(exc) as ei:
        fn(**over)
    assert type(ei.value) is exc, f"expected exactly {exc.__name__}, got {type(ei.value)}"
    assert name in str(ei.value), f"{name!r} not in message: {ei.value}"


# masked_whiten is pure Python: ValueError for shapes, TypeError for dtypes. ---------------
@pytest.mark.parametrize("x, mask, exc, name", [
    pytest.param(_Z(B, T), torch.ones(B, T - 1), ValueError, "`mask`", id="mask-shape"),
    pytest.param(_Z(B, T), torch.ones(B * T), ValueError, "`mask`", id="mask-1d"),
    pytest.param(_Z(B, T), torch.ones(T, B), ValueError, "`mask`", id="mask-transposed"),
    pytest.param(_Z(B, T, dtype=torch.long), torch.ones(B, T), TypeError, "`x`", id="x-long"),
    pytest.param(_Z(B, T, dtype=torch.int32), torch.ones(B, T), TypeError, "`x`", id="x-int32"),
    pytest.param(_Z(B, T, dtype=torch.bool), torch.ones(B, T), TypeError, "`x`", id="x-bool"),
])
def test_masked_whiten_bad_input(x, mask, exc, name):
    with pytest.raises(exc) as ei:
        sae_ext.masked_whiten(x, mask)
    assert name in str(ei.value)


def test_still_works_after_errors():
    """After all the failures above, the ops still compute (no corrupted state)."""
    with pytest.raises(RuntimeError):
        op_advantages(gamma=2.0)
    a, r = op_advantages()
    assert a.shape == (B, T) and torch.isfinite(a).all() and torch.isfinite(r).all()


# Boundary hyperparameter values that are allowed. ------------------------------------------
@pytest.mark.parametrize("x", [0.0, -0.0, 1.0, 0.5, 5e-324])
@pytest.mark.parametrize("arg", ["gamma", "lam", "lam_inner", "threshold"])
def test_unit_interval_endpoints_accepted(arg, x):
    for fn in TAKES[arg]:
        fn(**{arg: x})


# Devices. -----------------------------------------------------------------------------------
def _has_cuda_kernel():
    return HAS_CUDA_KERNELS


DEVICE_CASES = [
    (op_advantages, "rewards"), (op_advantages, "values"), (op_advantages, "logprobs"),
    (op_advantages, "mask"), (op_advantages, "bootstrap"),
    (op_from_boundaries, "rewards"), (op_from_boundaries, "values"),
    (op_from_boundaries, "boundaries"), (op_from_boundaries, "mask"),
    (op_from_boundaries, "bootstrap"),
    (op_segment_boundaries, "logprobs"), (op_segment_boundaries, "mask"),
]


def _one_elsewhere(arg, device):
    base = _base()
    t = base[arg] if base[arg] is not None else torch.zeros(B)
    return {arg: t.to(device)}


@pytest.mark.skipif(not _has_cuda_kernel(), reason="needs CUDA and the sae CUDA kernels")
@pytest.mark.parametrize("fn, arg", DEVICE_CASES,
                         ids=[f"{f.__name__}-{a}" for f, a in DEVICE_CASES])
def test_tensors_on_two_devices_cuda(fn, arg):
    with pytest.raises(RuntimeError) as ei:
        fn(**_one_elsewhere(arg, "cuda"))
    msg = str(ei.value)
    assert "device" in msg, msg
    assert f"`{arg}`" in msg, msg


# A "meta" tensor among CPU tensors is constructible on any machine. The dispatcher picks the
# Meta kernel (the fake kernel registered in sae_ext/_registrations.py) whenever any argument is
# on meta, so the C++ device check never runs: the error must come from the fake kernel (or the
# dispatcher). Plain aten ops raise "Tensor on device meta is not on the expected device cpu!"
# here; we accept any RuntimeError that mentions the device.
@pytest.mark.parametrize("fn, arg", DEVICE_CASES,
                         ids=[f"{f.__name__}-{a}" for f, a in DEVICE_CASES])
def test_meta_tensor_among_cpu_tensors_is_an_error(fn, arg):
    with pytest.raises(RuntimeError) as ei:
        out = fn(**_one_elsewhere(arg, "meta"))
        outs = out if isinstance(out, tuple) else (out,)
        print("no error; outputs on", [o.device for o in outs])
    msg = str(ei.value)
    assert "device" in msg or "meta" in msg, msg


def test_all_meta_gives_meta_outputs():
    """All inputs on meta is legitimate (shape propagation): outputs are meta, right shape."""
    m = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in _base().items()}
    m["bootstrap"] = torch.zeros(B, device="meta")
    for fn in (op_advantages, op_from_boundaries):
        a, r = fn(**m)
        assert a.device.type == "meta" and a.shape == (B, T) and a.dtype == torch.float32
        assert r.device.type == "meta" and r.shape == (B, T) and r.dtype == torch.float32
    b = op_segment_boundaries(**m)
    assert b.device.type == "meta" and b.shape == (B, T) and b.dtype == torch.bool


# Empty inputs are not errors. ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 0), (0, T), (B, 0)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dt_r, dt_v, dt_l, expect", [
    (torch.float32, torch.float32, torch.float32, torch.float32),
    (torch.float64, torch.float64, torch.float64, torch.float64),
    (torch.float32, torch.float64, torch.float32, torch.float64),
    (torch.bfloat16, torch.float16, torch.float32, torch.float32),
], ids=["f32", "f64", "mixed64", "half"])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32, torch.long],
                         ids=["bool", "float", "long"])
@pytest.mark.parametrize("with_bootstrap", [False, True], ids=["nobs", "bs"])
def test_empty_inputs(shape, dt_r, dt_v, dt_l, expect, mask_dtype, with_bootstrap):
    b_, t_ = shape
    r, v, lp = _Z(shape, dtype=dt_r), _Z(shape, dtype=dt_v), _Z(shape, dtype=dt_l)
    mask = _Z(shape, dtype=mask_dtype)
    bd = _Z(shape, dtype=torch.bool)
    bs = _Z(b_, dtype=dt_r) if with_bootstrap else None
    expect_adb = torch.float64 if torch.float64 in (dt_r, dt_v) else torch.float32
    results = [
        (ops.advantages(r, v, lp, mask, 1.0, 0.5, 1.0, 0.2, bs), expect),
        (ops.advantages_from_boundaries(r, v, bd, mask, 1.0, 0.5, 1.0, bs), expect_adb),
        (sae_ext.advantages(r, v, lp, mask, lam=0.5, bootstrap=bs), expect),
        (sae_ext.advantages_from_boundaries(r, v, bd, mask, lam=0.5, bootstrap=bs), expect_adb),
        # gae passes `values` as the log-probs too
        (sae_ext.gae(r, v, mask, bootstrap=bs), expect_adb),
    ]
    for (a, ret), dt in results:
        for o in (a, ret):
            assert o.shape == shape and o.dtype == dt and o.device.type == "cpu"
            assert o.is_contiguous()
    for b in (ops.segment_boundaries(lp, mask, 0.2), sae_ext.segment_boundaries(lp, mask)):
        assert b.shape == shape and b.dtype == torch.bool
    w = sae_ext.masked_whiten(r.float(), mask)
    assert w.shape == shape


# One message whichever path checks. ---------------------------------------------------------
# The C++ launchers check CPU tensors; the fake kernels (sae_ext/_validation.py) check meta
# tensors and FakeTensorMode's (torch.compile, opcheck). Both must reject every input of the
# table above with the same text, so that a rule changed on one side only shows up here.
def _op_backward(**kw):
    a = {**_base(), "grad_advantages": _Z(B, T), "grad_returns": _Z(B, T), **kw}
    return ops.advantages_backward(a["grad_advantages"], a["grad_returns"], a["mask"],
                                   a.get("bw_logprobs", a["logprobs"]), a.get("bw_boundaries"),
                                   a["gamma"], a["lam"], a["lam_inner"], a["threshold"])


def _backward_cases():
    out = []
    for arg in ("grad_advantages", "grad_returns"):
        for cid, bad in (("shape_T+1", _Z(B, T + 1)), ("1d", _Z(B * T)),
                         ("long", _Z(B, T, dtype=torch.long)),
                         ("complex64", _Z(B, T, dtype=torch.complex64))):
            out.append((f"{arg}-{cid}", {arg: bad}))
    for cid, bad in (("1d", torch.ones(B * T)), ("complex64", torch.ones(B, T, dtype=torch.complex64))):
        out.append((f"mask-{cid}", {"mask": bad}))
    for cid, bad in (("shape_T+1", _Z(B, T + 1)), ("long", _Z(B, T, dtype=torch.long))):
        out.append((f"logprobs-{cid}", {"bw_logprobs": bad}))
    out.append(("both-cuts", {"bw_boundaries": _Z(B, T, dtype=torch.bool)}))
    out.append(("boundaries-shape_T+1", {"bw_logprobs": None,
                                         "bw_boundaries": _Z(B, T + 1, dtype=torch.bool)}))
    out.append(("boundaries-float32", {"bw_logprobs": None, "bw_boundaries": _Z(B, T)}))
    for arg in ("gamma", "lam", "lam_inner", "threshold"):
        for cid, bad in BAD_UNIT:
            out.append((f"{arg}-{cid}", {arg: bad}))
    return out


def _parity_cases():
    cases = []
    for p in _cases():
        fn, over, _, _ = p.values
        if fn in (op_advantages, op_from_boundaries, op_segment_boundaries):
            cases.append(pytest.param(fn, over, id=p.id))
    for cid, over in _backward_cases():
        cases.append(pytest.param(_op_backward, over, id=f"op_backward-{cid}"))
    return cases


def _message(fn, **kw):
    with pytest.raises(RuntimeError) as ei:
        fn(**kw)
    return str(ei.value)


def _all_args(over):
    return {**_base(), "grad_advantages": _Z(B, T), "grad_returns": _Z(B, T), **over}


@pytest.mark.parametrize("fn, over", _parity_cases())
@pytest.mark.parametrize("path", ["meta", "fake"])
def test_meta_and_fake_paths_reject_with_the_cpu_message(fn, over, path):
    want = _message(fn, **over)
    args = _all_args(over)
    tensors = {k: v for k, v in args.items() if isinstance(v, torch.Tensor)}
    if path == "meta":
        got = _message(fn, **{**args, **{k: v.to("meta") for k, v in tensors.items()}})
    else:
        from torch._subclasses.fake_tensor import FakeTensorMode
        with FakeTensorMode() as mode:
            fakes = {k: mode.from_tensor(v) for k, v in tensors.items()}
            got = _message(fn, **{**args, **fakes})
    assert got == want


def test_the_fake_kernels_check_through_the_shared_validator(monkeypatch):
    """The parity above holds because the fakes call sae_ext._validation, not a copy of it."""
    from sae_ext import _validation

    called = []
    orig = _validation.check_adjoint
    monkeypatch.setattr(_validation, "check_adjoint", lambda *a: called.append(a) or orig(*a))
    m = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in _all_args({}).items()}
    ops.advantages_backward(m["grad_advantages"], m["grad_returns"], m["mask"], m["logprobs"], None,
                            1.0, 0.5, 1.0, 0.2)
    assert len(called) == 1


# A Tensor (not Tensor?) argument given as None: the kernel (CPU) and the fake (meta) say it is
# required, in the same words, rather than failing on a device or shape query of nothing.
def _required_cases(device):
    b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in _base().items()}
    r, v, lp, m = b["rewards"], b["values"], b["logprobs"], b["mask"]
    h = (b["gamma"], b["lam"], b["lam_inner"], b["threshold"])
    return [
        ("rewards", lambda: ops.advantages(None, v, lp, m, *h, None)),
        ("values", lambda: ops.advantages(r, None, lp, m, *h, None)),
        ("mask", lambda: ops.advantages_backward(r, v, None, lp, None, *h)),
        ("logprobs", lambda: ops.segment_boundaries(None, m, b["threshold"])),
        ("mask", lambda: ops.segment_boundaries(lp, None, b["threshold"])),
    ]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", range(5))
def test_required_tensor_given_as_none(device, case):
    name, call = _required_cases(device)[case]
    with pytest.raises(RuntimeError, match=f"`{name}` is required, got None"):
        call()
