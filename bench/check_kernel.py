"""Correctness sweep used while tuning the CPU kernel (not a benchmark, not a unit test):

    python bench/check_kernel.py [--quick]      # ~15 s quick, ~2 min full; exit 1 on a failure
    SAE_CPU_VECTOR=base python bench/check_kernel.py --quick   # the 16-byte (non-AVX2) build

For random inputs over dtype mixes (float32/bfloat16/float16/float64 numbers; bool, uint8,
int32, int64, float32 and bfloat16 masks, with holes, NaN masks, all-masked rows), layouts
(contiguous, transposed, strided slices, padded rows), odd B and T, bootstrap values and
four hyperparameter sets, it checks advantages, advantages_from_boundaries and
advantages_backward: bitwise against a torch re-enactment of sae_step.h in the accumulation
dtype, within tolerance against sae_ext.reference (float64) and the emulated CUDA warp; and
bitwise across thread counts and between a row alone and the same row in a batch, plus the
contract's worked example and empty shapes. Candidates for python_tests/.
"""
import math, sys, itertools, os
import numpy as np
import torch, sae_ext
from sae_ext import reference as ref
torch.manual_seed(1234)
F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16

def log_p32(p):
    if p == 0: return -math.inf
    lp = math.log(p); f = np.float32(lp)
    if float(f) < lp: f = np.nextafter(f, np.float32(np.inf))
    return float(f)

def cuts(lp, p):
    if lp.dtype == F64:
        return lp < (math.log(p) if p > 0 else -math.inf)
    return lp.float() < log_p32(p)

def oracle_fwd(r, v, cut, mask, gamma, lam, lam_in, bootstrap, acc):
    B, T = r.shape
    R, V = r.to(acc), v.to(acc)
    valid = mask != 0
    lamt = torch.where(valid, torch.where(cut, torch.tensor(lam, dtype=acc), torch.tensor(lam_in, dtype=acc)), torch.tensor(-1.0, dtype=acc))
    w = bootstrap.to(acc).clone() if bootstrap is not None else torch.zeros(B, dtype=acc)
    g = torch.tensor(gamma, dtype=acc)
    A = torch.zeros(B, T, dtype=acc); Rt = torch.zeros(B, T, dtype=acc)
    for t in reversed(range(T)):
        ret = R[:, t] + g * w; adv = ret - V[:, t]; wn = (g * lamt[:, t]) * w + (V[:, t] + lamt[:, t] * (R[:, t] - V[:, t]))
        ok = valid[:, t]
        A[:, t] = torch.where(ok, adv, 0.0); Rt[:, t] = torch.where(ok, ret, 0.0); w = torch.where(ok, wn, w)
    return A, Rt

def oracle_bwd(ga, gr, cut, mask, gamma, lam, lam_in, acc):
    B, T = mask.shape
    valid = mask != 0
    lamt = torch.where(valid, torch.where(cut, torch.tensor(lam, dtype=acc), torch.tensor(lam_in, dtype=acc)), torch.tensor(-1.0, dtype=acc))
    GA = ga.to(acc) if ga is not None else torch.zeros(B, T, dtype=acc)
    GR = gr.to(acc) if gr is not None else torch.zeros(B, T, dtype=acc)
    g_ = torch.tensor(gamma, dtype=acc)
    u = torch.zeros(B, dtype=acc); DR = torch.zeros(B, T, dtype=acc); DV = torch.zeros(B, T, dtype=acc)
    for t in range(T):
        g = GA[:, t] + GR[:, t]; dr = g + lamt[:, t] * u; dv = (1 - lamt[:, t]) * u - GA[:, t]; un = (g_ * lamt[:, t]) * u + g_ * g
        ok = valid[:, t]
        DR[:, t] = torch.where(ok, dr, 0.0); DV[:, t] = torch.where(ok, dv, 0.0); u = torch.where(ok, un, u)
    return DR, DV, u

def noncontig(x, how):
    if how == "contig": return x
    if how == "t": return x.t().contiguous().t()
    if how == "slice":  # every other column of a wider tensor
        big = torch.zeros(x.shape[0], 2 * x.shape[1] + 3, dtype=x.dtype); big[:, 1:2 * x.shape[1] + 1:2] = x
        return big[:, 1:2 * x.shape[1] + 1:2]
    if how == "rowpad":  # contiguous rows with a row stride > T
        big = torch.zeros(x.shape[0], x.shape[1] + 5, dtype=x.dtype); big[:, 2:2 + x.shape[1]] = x
        return big[:, 2:2 + x.shape[1]]

def make(B, T, dts, mask_dt, hole_p=0.3):
    r = torch.randn(B, T); v = torch.randn(B, T); lp = -torch.rand(B, T) * 3
    lp[torch.rand(B, T) < 0.02] = float("nan")
    m = torch.rand(B, T) > hole_p
    # trailing padding per row, some all-masked rows
    for b in range(B):
        L = int(torch.randint(0, T + 1, ()).item()); m[b, L:] = False
    if B > 2: m[1] = False
    r, v, lp = r.to(dts[0]), v.to(dts[1]), lp.to(dts[2])
    if mask_dt == torch.bool: mm = m
    elif mask_dt.is_floating_point:
        mm = m.to(mask_dt); mm[~m] = -0.0
        nanpos = torch.rand(B, T) < 0.01; mm[nanpos] = float("nan")  # NaN counts as valid
        m = m | nanpos
    else: mm = m.to(mask_dt) * 3
    return r, v, lp, mm

fails = 0
def eq(name, a, b):
    global fails
    if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)) or not torch.equal(a.isnan(), b.isnan()):
        d = (a.double() - b.double()).abs().nan_to_num().max().item() if a.shape == b.shape else None
        print("FAIL bitwise", name, a.dtype, b.dtype, a.shape, b.shape, d); fails += 1

def close(name, a, b, tol):
    global fails
    a, b = a.double(), b.double()
    ok = torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)
    if not ok:
        print("FAIL close", name, (a - b).abs().nan_to_num().max().item()); fails += 1

def run(B, T, dts, mask_dt, how, hyper, bootstrap_dt=None, emu=True):
    gamma, lam, lam_in, p = hyper
    r, v, lp, m = make(B, T, dts, mask_dt)
    bs = torch.randn(B).to(bootstrap_dt) if bootstrap_dt else None
    acc = F64 if F64 in (dts[0], dts[1], dts[2], bootstrap_dt) else F32
    R, V, LP, M = (noncontig(x, how) for x in (r, v, lp, m))
    A, Rt = torch.ops.sae.advantages(R, V, LP, M, gamma, lam, lam_in, p, bs)
    cut = cuts(lp, p)
    oA, oR = oracle_fwd(r, v, cut, m, gamma, lam, lam_in, bs, acc)
    tag = f"B{B} T{T} {dts} {mask_dt} {how} {hyper} bs={bootstrap_dt}"
    eq("adv " + tag, A, oA); eq("ret " + tag, Rt, oR)
    fA, fR = ref.advantages(r, v, lp, m, gamma, lam, lam_in, p, bs)
    tol = 1e-9 if acc == F64 else 2e-3
    close("ref adv " + tag, A, fA, tol); close("ref ret " + tag, Rt, fR, tol)
    if emu:
        eA, eR = torch.ops.sae._warp_emulated_advantages(R, V, LP, M, gamma, lam, lam_in, p, bs)
        close("emu adv " + tag, A, eA, tol); close("emu ret " + tag, Rt, eR, tol)
    # boundaries op variant
    bd = noncontig(cut & (m != 0), how)
    A2, R2 = torch.ops.sae.advantages_from_boundaries(R, V, bd, M, gamma, lam, lam_in, bs)
    oA2, oR2 = oracle_fwd(r, v, cut & (m != 0), m, gamma, lam, lam_in, bs, acc if lp.dtype != F64 or acc == F64 else acc)
    # note: from_boundaries acc ignores logprobs dtype
    acc2 = F64 if F64 in (dts[0], dts[1], bootstrap_dt) else F32
    oA2, oR2 = oracle_fwd(r, v, cut & (m != 0), m, gamma, lam, lam_in, bs, acc2)
    eq("bd adv " + tag, A2, oA2); eq("bd ret " + tag, R2, oR2)
    # backward
    ga = torch.randn(B, T).to(dts[0]); gr = torch.randn(B, T).to(dts[1])
    for gA, gR in ((ga, gr), (ga, None), (None, gr)):
        accb = F64 if any(x is not None and x.dtype == F64 for x in (gA, gR)) else F32
        GA = noncontig(gA, how) if gA is not None else None; GR = noncontig(gR, how) if gR is not None else None
        dr, dv, db = torch.ops.sae.advantages_backward(GA, GR, M, LP, None, gamma, lam, lam_in, p)
        odr, odv, odb = oracle_bwd(gA, gR, cut, m, gamma, lam, lam_in, accb)
        eq("bwd dr " + tag, dr, odr); eq("bwd dv " + tag, dv, odv); eq("bwd db " + tag, db, odb)
        if emu:
            edr, edv, edb = torch.ops.sae._warp_emulated_advantages_backward(GA, GR, M, LP, None, gamma, lam, lam_in, p)
            tb = 1e-9 if accb == F64 else 2e-3; close("emu bwd dr " + tag, dr, edr, tb); close("emu bwd dv " + tag, dv, edv, tb); close("emu bwd db " + tag, db, edb, tb)
        dr2, dv2, db2 = torch.ops.sae.advantages_backward(GA, GR, M, None, bd, gamma, lam, lam_in, p)
        eq("bwd-bd dr " + tag, dr2, odr); eq("bwd-bd db " + tag, db2, odb)
    return A, Rt

SAE = (1.0, 0.5, 1.0, 0.2); GAE = (0.99, 0.95, 0.95, 0.2); EDGE = (1.0, 0.0, 1.0, 1.0); P0 = (0.9, 0.3, 0.7, 0.0)
quick = "--quick" in sys.argv
n = 0
for B, T in [(1, 1), (1, 7), (3, 8), (5, 17), (8, 64), (9, 33), (17, 100), (33, 129), (40, 250), (70, 45)]:
    for dts in [(F32, F32, F32), (BF16, BF16, BF16), (F16, F16, F16), (F64, F64, F64), (F32, BF16, F64), (BF16, F32, F16), (F16, F64, F32)]:
        for mask_dt in [torch.bool, torch.uint8, torch.int32, torch.float32, torch.bfloat16, torch.int64]:
            for how in ["contig", "t", "slice", "rowpad"]:
                if quick and (n % 7): n += 1; continue
                n += 1
                if (n % 5): continue  # subsample combos
                hyper = [SAE, GAE, EDGE, P0][n % 4]
                bsd = [None, F32, BF16, F64][n % 4 if (n // 4) % 2 else 0]
                run(B, T, dts, mask_dt, how, hyper, bsd, emu=(B * T <= 4000))
# thread-count and path determinism
for B, T in [(33, 1000), (64, 257), (100, 64)]:
    r, v, lp, m = make(B, T, (F32, F32, F32), torch.bool)
    outs = []
    for th in (1, 2):
        torch.set_num_threads(th)
        outs.append(torch.ops.sae.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2, None))
        # rows alone == rows in a batch
    torch.set_num_threads(2)
    eq("threads adv", outs[0][0], outs[1][0])
    for b in (0, B // 2, B - 1):
        one = torch.ops.sae.advantages(r[b:b + 1], v[b:b + 1], lp[b:b + 1], m[b:b + 1], 1.0, 0.5, 1.0, 0.2, None)
        eq("row alone", one[0][0], outs[0][0][b])
# edge cases
for B, T in [(0, 5), (5, 0), (0, 0)]:
    z = torch.zeros(B, T)
    A, R = torch.ops.sae.advantages(z, z, z, z.bool(), 1.0, 0.5, 1.0, 0.2, None)
    assert A.shape == (B, T) and R.shape == (B, T)
    dr, dv, db = torch.ops.sae.advantages_backward(z, z, z.bool(), z, None, 1.0, 0.5, 1.0, 0.2)
    assert db.shape == (B,) and (db == 0).all(), db
# worked example of the contract
import math as _m
lp = torch.tensor([[_m.log(x) for x in (0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0)]])
val = torch.tensor([[0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0, 0]]); rw = torch.tensor([[0, 0, 0, 0, 0, 1.0, 0, 0]]); mk = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]]).bool()
A, R = torch.ops.sae.advantages(rw, val, lp, mk, 1.0, 0.5, 1.0, 0.2, None)
close("worked adv", A, torch.tensor([[0.025, 0.25, 0.05, 0.05, 0.7, 0.3, 0, 0]]), 1e-6)
close("worked ret", R, torch.tensor([[0.525, 0.65, 0.65, 0.65, 1.0, 1.0, 0, 0]]), 1e-6)
A, R = torch.ops.sae.advantages(rw, val, lp, mk, 1.0, 0.5, 0.5, 0.2, None)
close("worked gae", A, torch.tensor([[-0.003125, 0.19375, -0.0125, -0.025, 0.55, 0.3, 0, 0]]), 1e-6)
print("combos", n, "fails", fails)
sys.exit(1 if fails else 0)
