"""The CPU op at the shapes of issue 14 and the variants of issue 12 (item 7), each against
the copy floor of the bytes it moves and against numba prange loops, in interleaved rounds.

    python bench/cpu_shapes.py                  # ~3-4 min on 2 shared cores
    python bench/cpu_shapes.py --quick          # 2 shapes, 2 rounds
    python bench/cpu_shapes.py --sizes 1x131072 --dtypes float32 --modes sae

Writes results/cpu-shapes[-quick].json and prints Markdown tables. Methods (same inputs):
  op          sae_ext.advantages (SAE) / sae_ext.gae (GAE: reads rewards, values, mask)
  op_out      the same into preallocated outputs (torch.ops.sae.advantages.out)
  floor       clone() of a uint8 tensor of (bytes read + bytes written) / 2: one copy moving
              the op's bytes, output allocated per call as the op's are
  floor_out   the same copy into a preallocated buffer (the floor for op_out)
  numba       @njit(parallel=True) prange over rows, the recursion written plainly, allocating
              its numpy outputs per call (numpy advises huge pages on them), handed to torch
              with torch.from_numpy (no copy)
  numba_out   the same kernel writing into numpy outputs handed over by the caller (reused)
Every method is timed once per round (blocked_autorange), the rounds interleave the methods,
and each reports the median of its round medians and the spread (min .. max of them).
Minor page faults per call (getrusage ru_minflt) are counted over a separate run of calls.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils import benchmark as tb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import sae_ext  # noqa: E402
import baselines  # noqa: E402
from run import make_inputs  # noqa: E402

OPS = torch.ops.sae
# 256 x 6119: rows whose outputs start at every phase of a cache line (T not a power of two).
SHAPES = [(8, 1024), (64, 4096), (256, 8192), (256, 6119), (512, 16384), (8, 131072), (1, 131072)]
GAMMA, THRESHOLD = 1.0, 0.2
MODES = {"sae": (0.5, 1.0), "gae": (0.95, 0.95)}  # (lam, lam_inner)


def nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def minor_faults_per_call(fn, calls):
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def timed_rounds(methods, rounds, min_run_time):
    """{name: [round medians]}: every method once per round, the order rotating."""
    out = {k: [] for k in methods}
    names = list(methods)
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            t = tb.Timer("fn()", globals={"fn": methods[k]}, num_threads=torch.get_num_threads())
            out[k].append(t.blocked_autorange(min_run_time=min_run_time).median)
    return out


def copy_methods(read, written):
    n = (read + written) // 2
    src = torch.ones(n, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.fill_(0)
    return {"floor": lambda: src.clone(), "floor_out": lambda: dst.copy_(src)}


def numba_kernels():
    try:
        import numba
        import numpy as np
    except Exception as e:  # noqa: BLE001
        return None, f"numba not importable ({type(e).__name__}: {e})"
    numba.set_num_threads(torch.get_num_threads())

    kernel = baselines.numba_kernel(parallel=True)

    def make(inp, lam, lam_inner, reuse):
        import math
        B, T = inp["rewards"].shape
        log_p = np.float32(math.log(THRESHOLD))
        sae = lam != lam_inner
        outs = (np.empty((B, T), np.float32), np.empty((B, T), np.float32)) if reuse else None

        def run():
            r = inp["rewards"].float().numpy()
            v = inp["values"].float().numpy()
            lp = inp["logprobs"].float().numpy() if sae else r
            m = inp["mask"].numpy()
            adv, ret = outs if reuse else (np.empty((B, T), np.float32), np.empty((B, T), np.float32))
            kernel(r, v, lp, m, np.float32(GAMMA), np.float32(lam), np.float32(lam_inner), log_p,
                   sae, adv, ret)
            return torch.from_numpy(adv), torch.from_numpy(ret)
        return run

    return make, f"numba {numba.__version__}"


def op_methods(inp, mode):
    lam, lam_inner = MODES[mode]
    r, v, lp, m = inp["rewards"], inp["values"], inp["logprobs"], inp["mask"]
    a_out, r_out = torch.empty(r.shape), torch.empty(r.shape)
    a_out.fill_(0), r_out.fill_(0)
    if mode == "sae":
        op = lambda: sae_ext.advantages(r, v, lp, m, gamma=GAMMA, lam=lam, lam_inner=lam_inner,  # noqa: E731
                                        threshold=THRESHOLD)
        read = nbytes(r, v, lp, m)
        cut = lp
    else:
        op = lambda: sae_ext.gae(r, v, m, gamma=GAMMA, lam=lam)  # noqa: E731
        read = nbytes(r, v, m)
        cut = None
    op_out = lambda: OPS.advantages.out(r, v, cut, m, GAMMA, lam, lam_inner, THRESHOLD,  # noqa: E731
                                        out_advantages=a_out, out_returns=r_out)
    return {"op": op, "op_out": op_out}, read, 2 * r.numel() * 4


def summarize(rounds):
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "rounds_s": v}
            for k, v in rounds.items()}


def bench_shape(B, T, dtype, mode, make_numba, rounds, mrt, fault_calls):
    inp = make_inputs(B, T, dtype, "cpu", seed=B * 31 + T)
    methods, read, written = op_methods(inp, mode)
    methods.update(copy_methods(read, written))
    if make_numba is not None:
        lam, lam_inner = MODES[mode]
        methods["numba"] = make_numba(inp, lam, lam_inner, reuse=False)
        methods["numba_out"] = make_numba(inp, lam, lam_inner, reuse=True)
        got = methods["numba"]()[0]
        want = methods["op"]()[0]
        err = (got - want).abs().max().item()
    else:
        err = None
    for fn in methods.values():  # warm-up (numba compiles on its first call)
        fn()
    res = summarize(timed_rounds(methods, rounds, mrt))
    faults = {k: minor_faults_per_call(methods[k], fault_calls) for k in methods}
    return {"B": B, "T": T, "dtype": str(dtype)[6:], "mode": mode, "read_bytes": read,
            "written_bytes": written, "numba_max_abs_diff": err, "methods": res,
            "minor_faults_per_call": faults}


def bench_variants(B, T, rounds, mrt, fault_calls):
    """Issue 12 item 7 at one shape, float32: each variant against the floor of its bytes."""
    inp = make_inputs(B, T, torch.float32, "cpu", seed=7)
    r, v, lp, m = inp["rewards"], inp["values"], inp["logprobs"], inp["mask"]
    lam_rows = sae_ext.length_adaptive_lam(m)
    lengths = m.sum(1)
    cu = torch.zeros(B + 1, dtype=torch.int64)
    cu[1:] = torch.cumsum(lengths, 0)
    pr, pv, plp = r[m], v[m], lp[m]
    N = int(cu[-1])
    rows = []
    cases = {
        "sae (scalar lam)": (lambda: sae_ext.advantages(r, v, lp, m, lam=0.5), nbytes(r, v, lp, m), B * T),
        "sae, per-row lam [B]": (lambda: sae_ext.advantages(r, v, lp, m, lam=lam_rows),
                                 nbytes(r, v, lp, m, lam_rows), B * T),
        "sae, lam_critic=1.0": (lambda: sae_ext.advantages(r, v, lp, m, lam=0.5, lam_critic=1.0),
                                nbytes(r, v, lp, m), B * T),
        "gae (3 inputs)": (lambda: sae_ext.gae(r, v, m, lam=0.95), nbytes(r, v, m), B * T),
        "gae, per-row lam + lam_critic=1.0": (lambda: sae_ext.gae(r, v, m, lam=lam_rows, lam_critic=1.0),
                                               nbytes(r, v, m, lam_rows), B * T),
        "sae packed [N] (varlen)": (lambda: sae_ext.advantages_varlen(pr, pv, plp, cu, lam=0.5),
                                    nbytes(pr, pv, plp, cu), N),
        "sae padded [B, T], same rows, no mask": (
            lambda: sae_ext.advantages(r, v, lp, None, lam=0.5), nbytes(r, v, lp), B * T),
    }
    for name, (fn, read, tokens) in cases.items():
        methods = {"op": fn}
        methods.update(copy_methods(read, 2 * tokens * 4))
        for f in methods.values():
            f()
        res = summarize(timed_rounds(methods, rounds, mrt))
        rows.append({"variant": name, "B": B, "T": T, "N": N, "read_bytes": read,
                     "written_bytes": 2 * tokens * 4, "methods": res,
                     "minor_faults_per_call": {"op": minor_faults_per_call(fn, fault_calls)}})
    return rows


def ms(s):
    return f"{s * 1e3:.3g}"


def markdown(res):
    lines = ["| B x T | inputs | mode | op ms (spread) | op_out ms | floor ms | floor_out ms | op / floor "
             "| op_out / floor_out | numba ms (x op) | numba_out ms (x op_out) | faults/call op, op_out, numba |",
             "|" + "---|" * 12]
    for r in res["shapes"]:
        t = {k: v["median_s"] for k, v in r["methods"].items()}
        sp = r["methods"]["op"]
        f = r["minor_faults_per_call"]
        nb = (f"{ms(t['numba'])} ({t['numba'] / t['op']:.2f}x)" if "numba" in t else "-")
        nbo = (f"{ms(t['numba_out'])} ({t['numba_out'] / t['op_out']:.2f}x)" if "numba_out" in t else "-")
        lines.append(
            f"| {r['B']} x {r['T']} | {r['dtype']} | {r['mode']} | {ms(t['op'])} ({ms(sp['min_s'])}-{ms(sp['max_s'])})"
            f" | {ms(t['op_out'])} | {ms(t['floor'])} | {ms(t['floor_out'])} | {t['op'] / t['floor']:.2f}"
            f" | {t['op_out'] / t['floor_out']:.2f} | {nb} | {nbo} | {f['op']:.0f}, {f['op_out']:.0f}, "
            f"{f.get('numba', float('nan')):.0f} |")
    if res.get("variants"):
        lines += ["", "| variant (float32, B x T) | op ms (spread) | floor ms | op / floor | floor_out ms "
                  "| op / floor_out | faults/call |", "|" + "---|" * 7]
        for r in res["variants"]:
            t = {k: v["median_s"] for k, v in r["methods"].items()}
            sp = r["methods"]["op"]
            lines.append(f"| {r['variant']} ({r['B']} x {r['T']}, N = {r['N']}) | {ms(t['op'])} "
                         f"({ms(sp['min_s'])}-{ms(sp['max_s'])}) | {ms(t['floor'])} | {t['op'] / t['floor']:.2f} "
                         f"| {ms(t['floor_out'])} | {t['op'] / t['floor_out']:.2f} | "
                         f"{r['minor_faults_per_call']['op']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="sae,gae")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--name")
    ap.add_argument("--report")
    args = ap.parse_args()
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return
    shapes = SHAPES if not args.sizes else [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    if args.quick and not args.sizes:
        shapes = [(64, 4096), (1, 131072)]
    rounds = args.rounds or (2 if args.quick else 3)
    mrt = 0.03 if args.quick else 0.06
    make_numba, numba_info = numba_kernels()
    res = {"machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "python": platform.python_version(), "numba": numba_info,
                       "cpu_vector": sae_ext._C.__name__ if hasattr(sae_ext, "_C") else None,
                       "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
           "command": " ".join(sys.argv), "rounds": rounds, "shapes": [], "variants": []}
    for B, T in shapes:
        for dt in args.dtypes.split(","):
            for mode in args.modes.split(","):
                r = bench_shape(B, T, getattr(torch, dt), mode, make_numba, rounds, mrt,
                                fault_calls=5 if B * T >= 1 << 22 else 20)
                res["shapes"].append(r)
                t = r["methods"]
                print(f"{B}x{T} {dt} {mode}: op {ms(t['op']['median_s'])} ms, floor "
                      f"{ms(t['floor']['median_s'])} ms, faults/call {r['minor_faults_per_call']['op']:.0f}",
                      flush=True)
    if not args.no_variants:
        res["variants"] = bench_variants(256, 8192, rounds, mrt, fault_calls=20)
    name = args.name or ("cpu-shapes-quick" if args.quick else "cpu-shapes")
    out = HERE / "results" / f"{name}.json"
    out.write_text(json.dumps(res, indent=1))
    print(markdown(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
