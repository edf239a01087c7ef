"""Rows whose outputs start mid-cache-line, A/B of two checkouts of sae-ext on CPU:

    python bench/row_alignment_ab.py <repo root A> <repo root B> [--rounds 3]

Padded float32 rows [256, T], SAE and GAE, into preallocated outputs for T = 6144 (every
row starts on a 64-byte line) and 6136 / 6140 / 6119 (rows start at other phases), then the
rollout of bench/run.py's make_inputs(256, 8192) packed as [N] (advantages_varlen) beside
the same rows padded. Each checkout runs in its own process, A B A B ..., and the median of
each process's 40-call median is printed per case, with the ratio B / A of each round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, json, time, statistics
root = sys.argv[1]
sys.path.insert(0, root); sys.path.insert(0, root + "/bench")
import torch, sae_ext
from run import make_inputs
assert sae_ext.__file__.startswith(root), sae_ext.__file__
torch.set_num_threads(2)
def med(f, n=40):
    for _ in range(3): f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3
res = {}
g = torch.Generator().manual_seed(0)
for T in (6144, 6136, 6140, 6119):
    r, v = torch.randn(256, T, generator=g), torch.randn(256, T, generator=g)
    lp = -torch.rand(256, T, generator=g) * 3
    m = torch.ones(256, T, dtype=torch.bool)
    a, b = torch.empty_like(r), torch.empty_like(r)
    res[f"padded 256x{T}"] = med(lambda: sae_ext.advantages(r, v, lp, m, lam=0.5, out=(a, b)))
    res[f"padded 256x{T}, gae"] = med(lambda: sae_ext.advantages(r, v, None, m, lam=0.95, lam_inner=0.95, out=(a, b)))
inp = make_inputs(256, 8192, torch.float32, "cpu", seed=7)
r, v, lp, m = inp["rewards"], inp["values"], inp["logprobs"], inp["mask"]
cu = torch.zeros(257, dtype=torch.int64)
cu[1:] = torch.cumsum(m.sum(1), 0)
pr, pv, plp = r[m], v[m], lp[m]
res["rollout 256x8192 packed [N]"] = med(lambda: sae_ext.advantages_varlen(pr, pv, plp, cu, lam=0.5))
res["rollout 256x8192 padded, no mask"] = med(lambda: sae_ext.advantages(r, v, lp, None, lam=0.5))
print(json.dumps(res))
"""


def run(root):
    out = subprocess.run([sys.executable, "-c", CHILD, root], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{root}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ra, rb = [], []
    for _ in range(args.rounds):
        ra.append(run(args.a))
        rb.append(run(args.b))
    print(f"| case (float32, 2 threads) | A ms | B ms | B / A (per round) |\n|---|---|---|---|")
    for k in ra[0]:
        a = statistics.median(x[k] for x in ra)
        b = statistics.median(x[k] for x in rb)
        ratios = ", ".join(f"{y[k] / x[k]:.2f}" for x, y in zip(ra, rb))
        print(f"| {k} | {a:.3g} | {b:.3g} | {ratios} |")


if __name__ == "__main__":
    main()
