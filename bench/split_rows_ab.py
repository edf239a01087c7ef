"""A/B of two checkouts of sae-ext on CPU split rows: python bench/split_rows_ab.py <repo root>
prints {"BxT@threads": [best ms, median ms]} of 25 out= calls; run it for each checkout in turn."""
import sys, json, time, statistics
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
import torch, sae_ext
from run import make_inputs
assert sae_ext.__file__.startswith(sys.argv[1]), sae_ext.__file__
res = {}
for (B, T) in [(2, 131072), (4, 131072), (8, 131072), (16, 131072), (32, 65536), (1, 131072)]:
    inp = make_inputs(B, T, torch.float32, "cpu", seed=0)
    r, v, lp, m = inp["rewards"], inp["values"], inp["logprobs"], inp["mask"]
    a = torch.empty_like(r); b = torch.empty_like(r)
    for n in (1, 2):
        torch.set_num_threads(n)
        f = lambda: sae_ext.advantages(r, v, lp, m, gamma=1.0, lam=0.5, lam_inner=1.0, threshold=0.2, out=(a, b))
        for _ in range(3): f()
        ts = []
        for _ in range(25):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        res[f"{B}x{T}@{n}"] = (min(ts) * 1e3, statistics.median(ts) * 1e3)
print(json.dumps(res))
