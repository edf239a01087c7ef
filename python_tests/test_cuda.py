"""The CUDA kernels on a real GPU. Skipped where there is none; they run on any machine
with a GPU and a CUDA build (`pytest python_tests/test_cuda.py`; scripts/gpu_check.sh runs
them with a JUnit log).

Besides the reference (within the flash-attention criterion), every case is compared bit for
bit with the emulated warp (`torch.ops.sae._warp_emulated_advantages[_backward]` on CPU
copies): the kernels are built with -fmad=false and every schedule composes the same chunk
maps in the same order, so the GPU must produce exactly the emulator's bits, whatever B,
the schedule or the run."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import torch

import sae_ext
import sae_ext.info

from conftest import check_against_reference, cuda, make_rollout

OPS = torch.ops.sae
pytestmark = cuda
SAE, GAE = (1.0, 0.5, 1.0, 0.2), (0.99, 0.95, 0.95, 0.2)


def _to(args, device):
    return tuple(None if t is None else t.to(device) for t in args)


def assert_bitwise(got, want, what=""):
    """Each tensor of `got` (CUDA) has the dtype and exactly the bits of `want` (CPU)."""
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.cpu()
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} output {i}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        if not torch.equal(g, w):
            bad = (g != w).nonzero()
            first = tuple(bad[0].tolist())
            raise AssertionError(f"{what} output {i}: {len(bad)} elements differ from the emulated warp, first at "
                                 f"{first}: {g[first].item()!r} vs {w[first].item()!r} "
                                 f"(max |diff| {(g.double() - w.double()).abs().max().item():.3g})")


def emulated(r, v, lp, m, hyper, bs=None):
    """The emulated warp on CPU copies (contiguous: the emulator's bits do not depend on layout)."""
    cpu = lambda t: None if t is None else t.cpu().contiguous()  # noqa: E731
    return OPS._warp_emulated_advantages(cpu(r), cpu(v), cpu(lp), cpu(m), *hyper, cpu(bs))


def emulated_backward(ga, gr, m, lp, bnd, hyper):
    cpu = lambda t: None if t is None else t.cpu().contiguous()  # noqa: E731
    return OPS._warp_emulated_advantages_backward(cpu(ga), cpu(gr), cpu(m), cpu(lp), cpu(bnd), *hyper)


@pytest.mark.parametrize("B,T", [(1, 1), (3, 31), (5, 33), (8, 256), (9, 257), (16, 1000), (2, 20000), (300, 77)])
@pytest.mark.parametrize("hyper", [(1.0, 0.5, 1.0, 0.2), (0.99, 0.95, 0.95, 0.2)])
def test_matches_reference(B, T, hyper):
    r, v, lp, m, bs = make_rollout(B, T, seed=B + T, reward_kind="dense")
    out = OPS.advantages(*_to((r, v, lp, m), "cuda"), *hyper, bs.cuda())
    assert out[0].is_cuda and out[0].is_contiguous()
    check_against_reference(tuple(t.cpu() for t in out), (r, v, lp, m, *hyper, bs), what=f"{B}x{T}")
    assert_bitwise(out, emulated(r, v, lp, m, hyper, bs), f"{B}x{T} {hyper}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.bfloat16])
def test_dtypes(dtype, mask_dtype):
    r, v, lp, m, bs = make_rollout(7, 500, dtype=dtype, mask_dtype=mask_dtype, seed=1, reward_kind="dense")
    out = OPS.advantages(*_to((r, v, lp, m), "cuda"), 0.99, 0.6, 1.0, 0.2, bs.cuda())
    check_against_reference(tuple(t.cpu() for t in out), (r, v, lp, m, 0.99, 0.6, 1.0, 0.2, bs), what=str(dtype))
    assert_bitwise(out, emulated(r, v, lp, m, (0.99, 0.6, 1.0, 0.2), bs), f"{dtype} mask {mask_dtype}")


def test_noncontiguous_and_unaligned():
    r, v, lp, m, bs = make_rollout(6, 301, seed=2, reward_kind="dense")
    want = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    emu = emulated(r, v, lp, m, SAE, bs)
    tr = [t.cuda().t().contiguous().t() for t in (r, v, lp, m)]
    off = [torch.cat([torch.zeros(6, 1, dtype=t.dtype), t], 1).cuda()[:, 1:] for t in (r, v, lp, m)]
    for name, args in (("transposed", tr), ("offset by one element", off)):
        got = OPS.advantages(*args, 1.0, 0.5, 1.0, 0.2, bs.cuda())
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, rtol=0, atol=2e-5)
        assert_bitwise(got, emu, name)  # the scalar path gives the vector path's bits


def test_boundaries_and_backward_match_cpu():
    r, v, lp, m, bs = make_rollout(9, 700, seed=3, reward_kind="dense")
    bnd = OPS.segment_boundaries(lp, m, 0.2)
    assert torch.equal(OPS.segment_boundaries(lp.cuda(), m.cuda(), 0.2).cpu(), bnd)
    # the same cuts given as bool boundaries: the same lambdas, so the same bits
    got = OPS.advantages_from_boundaries(*_to((r, v, bnd, m), "cuda"), 1.0, 0.5, 1.0, bs.cuda())
    assert_bitwise(got, emulated(r, v, lp, m, SAE, bs), "from boundaries")
    ga, gr = torch.randn(9, 700), torch.randn(9, 700)
    hyper = (0.98, 0.4, 1.0, 0.2)
    want = OPS.advantages_backward(ga, gr, m, lp, None, *hyper)
    for grads in [(ga, gr), (ga, None), (None, gr)]:
        got = OPS.advantages_backward(*_to(grads, "cuda"), m.cuda(), lp.cuda(), None, *hyper)
        assert_bitwise(got, emulated_backward(*grads, m, lp, None, hyper), f"backward {[g is not None for g in grads]}")
    got = OPS.advantages_backward(ga.cuda(), gr.cuda(), m.cuda(), lp.cuda(), None, *hyper)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-5 * max(1.0, w.abs().max().item()))
    got = OPS.advantages_backward(ga.cuda(), gr.cuda(), m.cuda(), None, bnd.cuda(), 0.98, 0.4, 1.0, 0.0)
    assert_bitwise(got, emulated_backward(ga, gr, m, None, bnd, (0.98, 0.4, 1.0, 0.0)), "backward from boundaries")


def test_many_rows_beyond_one_grid_row_of_blocks():
    r, v, lp, m, bs = make_rollout(300_000, 9, seed=4, reward_kind="dense", mask_kind="random")
    want = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    got = OPS.advantages(*_to((r, v, lp, m), "cuda"), 1.0, 0.5, 1.0, 0.2, bs.cuda())
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=1e-5)


def test_runs_on_the_current_stream():
    r, v, lp, m, bs = _to(make_rollout(64, 4096, seed=5, reward_kind="dense"), "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        adv, _ = OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    s.synchronize()
    torch.testing.assert_close(adv, OPS.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)[0])


def test_mixed_devices_raise_naming_the_argument():
    r, v, lp, m, bs = make_rollout(2, 10)
    with pytest.raises(RuntimeError, match="CUDA device"):
        OPS.advantages(r.cuda(), v, lp.cuda(), m.cuda(), 1.0, 0.5, 1.0, 0.2)
    with pytest.raises(RuntimeError, match="bootstrap"):
        OPS.advantages(r.cuda(), v.cuda(), lp.cuda(), m.cuda(), 1.0, 0.5, 1.0, 0.2, bs)


def test_gradcheck_and_compile_on_cuda():
    r, v, lp, m, bs = _to(make_rollout(3, 40, dtype=torch.float64, seed=6, reward_kind="dense"), "cuda")
    r, v, bs = (t.requires_grad_() for t in (r, v, bs))
    assert torch.autograd.gradcheck(lambda r, v, bs: OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs), (r, v, bs))
    f = torch.compile(lambda r, v, lp, m: sae_ext.advantages(r, v, lp, m, lam=0.5), fullgraph=True, dynamic=True)
    args = _to(make_rollout(5, 333, seed=7, reward_kind="dense")[:4], "cuda")
    torch.testing.assert_close(f(*args), sae_ext.advantages(*args, lam=0.5))


def test_the_build_has_code_for_this_gpu():
    """The build info's arch list covers the running device (SASS of its major, or PTX the
    driver can JIT upwards), and so does the binary itself where cuobjdump can list it."""
    major, minor = torch.cuda.get_device_capability()
    arch_list = sae_ext.info.build_info()["cuda_arch_list"]
    assert sae_ext.info._arch_covers(arch_list, major, minor), f"sm_{major}{minor} not in {arch_list}"
    spec = importlib.util.spec_from_file_location(
        "check_cuda_binary", Path(__file__).resolve().parents[1] / "scripts" / "check_cuda_binary.py")
    finder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(finder)
    tool = finder.find_tool("cuobjdump")
    if tool is None:
        return
    listing = subprocess.run([tool, "-lelf", "-lptx", sae_ext._C.__file__], capture_output=True, text=True).stdout
    sass = {int(a) for a in re.findall(r"ELF file.*\.sm_(\d+)[a-z]?\.", listing)}
    ptx = {int(a) for a in re.findall(r"PTX file.*\.sm_(\d+)[a-z]?\.", listing)}
    cap = 10 * major + minor
    assert any(a // 10 == major and a <= cap for a in sass) or any(a <= cap for a in ptx), listing


# Shapes that make the launcher choose each schedule (docs/gpu.md): many short rows (a small
# block per row), medium rows (a block of 8 warps walks a row), few long rows (the split
# schedule: chunk totals, carries, replay). The emulator takes ~30-90 us per token, so for
# the large batches it replays a few rows alone: by design a row's bits depend on T only,
# so a row emulated alone must equal the same row of the GPU's batch. Rows are chosen to
# cover make_rollout's mixed mask kinds (b % 4: full, trailing padding, holes, all masked).
F32, BF16 = torch.float32, torch.bfloat16
SCHEDULE_CASES = [
    (4096, 1024, [0, 1, 2, 3, 2050, 4095], F32), (4096, 1024, [1, 2, 4094], BF16),  # W = 2
    (256, 8192, [0, 1, 2, 255], F32), (256, 8192, [2], BF16),  # W = 8
    (256, 1000, [0, 1, 2, 3, 254], F32), (256, 1000, [1, 2], BF16),  # W = 4
    (2, 40000, [0, 1], F32), (2, 40000, [0, 1], BF16),  # split, two rows
    (1, 131072, [0], F32),  # split, the lone row
]


@pytest.mark.parametrize("B,T,rows,dtype", SCHEDULE_CASES,
                         ids=[f"{b}x{t}-{str(d)[6:]}" for b, t, _, d in SCHEDULE_CASES])
def test_every_schedule_equals_the_emulated_warp(B, T, rows, dtype):
    r, v, lp, m, bs = make_rollout(B, T, dtype=dtype, seed=B + T, reward_kind="dense")
    hyper = SAE if dtype == torch.float32 or B > 2 else GAE
    got = OPS.advantages(*_to((r, v, lp, m), "cuda"), *hyper, bs.cuda())
    idx = torch.tensor(rows)
    want = emulated(r[idx], v[idx], lp[idx], m[idx], hyper, bs[idx])
    assert_bitwise(tuple(t[idx.cuda()] for t in got), want, f"{B}x{T} {dtype} rows {rows}")
    if T <= 4096:  # and against the reference, whose Python loop over T is slow for long rows
        check_against_reference(tuple(t.cpu() for t in got), (r, v, lp, m, *hyper, bs), what=f"{B}x{T}")


@pytest.mark.parametrize("B,T,rows", [(4096, 1024, [1, 4094]), (256, 8192, [2]), (2, 40000, [0, 1])],
                         ids=["4096x1024", "256x8192", "2x40000"])
def test_every_schedule_of_the_adjoint_equals_the_emulated_warp(B, T, rows):
    _, _, lp, m, _ = make_rollout(B, T, seed=B + T + 1, reward_kind="dense")
    g = torch.Generator().manual_seed(B + T)
    ga, gr = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    hyper = (0.98, 0.4, 1.0, 0.2)
    got = OPS.advantages_backward(ga.cuda(), gr.cuda(), m.cuda(), lp.cuda(), None, *hyper)
    idx = torch.tensor(rows)
    want = emulated_backward(ga[idx], gr[idx], m[idx], lp[idx], None, hyper)
    assert_bitwise(tuple(t[idx.cuda()] for t in got), want, f"adjoint {B}x{T} rows {rows}")


@pytest.mark.parametrize("B,T", [(4096, 1024), (256, 8192), (8, 131072), (2, 40000), (300_000, 9)])
def test_a_row_alone_gives_its_bits_in_the_batch(B, T):
    """On the GPU alone: a batch picks another schedule than its rows do alone (B decides
    it), and the bits must not change."""
    masks = "random" if B > 10_000 else "mixed"  # "mixed" loops over rows in Python
    r, v, lp, m, bs = _to(make_rollout(B, T, seed=T, reward_kind="dense", mask_kind=masks), "cuda")
    adv, ret = OPS.advantages(r, v, lp, m, *SAE, bs)
    ga = torch.randn(B, T, generator=torch.Generator().manual_seed(B)).cuda()
    grads = OPS.advantages_backward(ga, None, m, lp, None, *SAE)
    for b in sorted({0, 1, 2, B // 2, B - 1}):
        s = slice(b, b + 1)
        alone = OPS.advantages(r[s], v[s], lp[s], m[s], *SAE, bs[s])
        assert_bitwise(alone, (adv[s].cpu(), ret[s].cpu()), f"row {b} of {B}x{T}")
        alone = OPS.advantages_backward(ga[s], None, m[s], lp[s], None, *SAE)
        assert_bitwise(alone, tuple(t[s].cpu() for t in grads), f"adjoint row {b} of {B}x{T}")


def test_results_do_not_change_from_run_to_run():
    r, v, lp, m, bs = _to(make_rollout(8, 131072, seed=11, reward_kind="dense"), "cuda")
    first = OPS.advantages(r, v, lp, m, *SAE, bs)
    for _ in range(3):
        assert_bitwise(OPS.advantages(r, v, lp, m, *SAE, bs), tuple(t.cpu() for t in first), "rerun")


# ---- issue 12's variants: bit for bit the emulated warp (python_tests/test_emulated_warp.py
# checks the emulated warp against the CPU op and the reference). ---------------------------

def _variant_cases():
    g = torch.Generator().manual_seed(12)
    lam, lam_in, lam_c = (torch.rand(6, generator=g) for _ in range(3))
    return {
        "per-row lam": dict(lam_rows=lam, lam_inner_rows=lam_in),
        "per-row lam bf16": dict(lam_rows=lam.bfloat16()),
        "critic": dict(lam_critic=0.9),
        "critic per-row": dict(lam_critic=0.9, lam_critic_rows=lam_c),
    }


@pytest.mark.parametrize("T", [300, 5000])  # 6 x 5000: the split schedule
@pytest.mark.parametrize("case", list(_variant_cases()))
def test_variants_equal_the_emulated_warp(case, T):
    kw = _variant_cases()[case]
    r, v, lp, m, bs = make_rollout(6, T, seed=T, reward_kind="dense")
    for lp_, m_ in ((lp, m), (None, m), (lp, None), (None, None)):
        got = OPS.advantages(*_to((r, v, lp_, m_), "cuda"), *GAE, bs.cuda(), **_to_kw(kw))
        want = OPS._warp_emulated_advantages(r, v, lp_, m_, *GAE, bs, **kw)
        assert_bitwise(got, want, f"{case} T={T} logprobs={lp_ is not None} mask={m_ is not None}")


def _to_kw(kw, device="cuda"):
    return {k: (x.to(device) if isinstance(x, torch.Tensor) else x) for k, x in kw.items()}


@pytest.mark.parametrize("lengths", [[0, 1, 7, 256, 300, 33, 0, 513], [8, 0, 256, 520, 64, 1024], [0, 9000, 1, 8200]],
                         ids=["short", "aligned", "split"])
def test_packed_rows_equal_the_emulated_warp(lengths):
    g = torch.Generator().manual_seed(len(lengths))
    N, B = sum(lengths), len(lengths)
    r, v = torch.randn(N, generator=g), torch.randn(N, generator=g)
    lp = (torch.rand(N, generator=g) ** 0.3).clamp_min(1e-6).log()
    m = torch.rand(N, generator=g) > 0.3
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    bs, lam = torch.randn(B, generator=g), torch.rand(B, generator=g)
    for kw in ({}, dict(lam_rows=lam), dict(lam_critic=0.8)):
        for m_ in (m, None):
            kw2 = dict(kw, cu_seqlens=cu)
            got = OPS.advantages(*_to((r, v, lp, m_), "cuda"), *SAE, bs.cuda(), **_to_kw(kw2))
            want = OPS._warp_emulated_advantages(r, v, lp, m_, *SAE, bs, **kw2)
            assert_bitwise(got, want, f"packed {lengths} {sorted(kw)} mask={m_ is not None}")
    ga, gr = torch.randn(N, generator=g), torch.randn(N, generator=g)
    for cut in ((lp, None), (None, None)):
        args = (ga, gr, m, *cut, 0.99, 0.5, 1.0, 0.2)
        got = OPS.advantages_backward(*_to(args[:5], "cuda"), *args[5:], lam_rows=lam.cuda(), cu_seqlens=cu.cuda())
        want = OPS._warp_emulated_advantages_backward(*args, lam_rows=lam, cu_seqlens=cu)
        assert_bitwise(got, want, f"packed adjoint {lengths} logprobs={cut[0] is not None}")
