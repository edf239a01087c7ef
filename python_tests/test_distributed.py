"""sae_ext.distributed on 2, 3 and 4 gloo processes: each rank's output against its columns
of the unsharded op (bit for bit on the last rank, whose carry is the user's bootstrap; to
rounding in float64; flash-attention's criterion against reference.py in float32), and clear
errors on every rank, without a hang, when the ranks' inputs disagree.

The same file is the worker: `python test_distributed.py --worker RANK N INIT OUT` joins a
gloo group through the file INIT, runs every case of `_cases(N)` on its shard and saves what
it got (outputs or error text) to OUT; the tests compare in the parent process.
"""
from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import tempfile

import pytest
import torch

import sae_ext
import sae_ext.distributed as sd
from sae_ext import reference

from _integrations_common import subprocess_env
from conftest import assert_close_to_reference, make_rollout

LOW = math.log(0.01)  # a log-prob that starts a segment at threshold 0.2


def _widths(n, T, seed, zero_at=None):
    """Uneven shard widths summing to T; `zero_at`: that rank gets no columns."""
    g = torch.Generator().manual_seed(seed)
    ranks = [j for j in range(n) if j != zero_at]
    cuts = sorted(torch.randperm(T - 1, generator=g)[:len(ranks) - 1].add(1).tolist())
    if n == 1:
        return [T]
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [T])]
    out = [0] * n
    for j, s in zip(ranks, sizes):
        out[j] = s
    return out


def _edges(widths):
    e = [0]
    for w in widths:
        e.append(e[-1] + w)
    return e


def _cases(n):
    """name -> (function, full-row inputs, widths, keyword arguments). Deterministic, so the
    workers and the parent build the same ones."""
    cases = {}
    B, T = 8, 48

    r, v, lp, m, boot = make_rollout(B, T, seed=n, mask_kind="random", reward_kind="dense")
    cases["holes_f32"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                          _widths(n, T, 1), dict(lam=0.5, gamma=1.0, bootstrap=boot))

    # Segment starts on every shard's first and last column, per-row lambdas, gamma < 1.
    r, v, lp, m, boot = make_rollout(B, T, seed=10 + n, dtype=torch.float64, mask_kind="mixed",
                                     reward_kind="dense")
    w = _widths(n, T, 2)
    for t0, t1 in zip(_edges(w)[:-1], _edges(w)[1:]):
        if t1 > t0:
            lp[:, t0], lp[:, t1 - 1] = LOW, LOW
            m[:4, t0] = True
    g = torch.Generator().manual_seed(3)
    cases["edges_f64"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m), w,
                          dict(lam=torch.rand(B, generator=g, dtype=torch.float64),
                               lam_inner=torch.rand(B, generator=g).add(1).div(2),
                               gamma=0.97, bootstrap=boot))

    # A fully masked shard, a shard of width 0 and the critic's own chain.
    r, v, lp, m, boot = make_rollout(B, T, seed=20 + n, mask_kind="random", reward_kind="dense")
    w = _widths(n, T, 4, zero_at={1: None, 2: 1}.get(n, 1))
    full = [j for j in range(n) if w[j] > 0][0 if n <= 2 else -1]
    e = _edges(w)
    m[:, e[full]:e[full + 1]] = False
    cases["masked_shard_critic"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                                    w, dict(lam=0.7, lam_inner=0.9, gamma=0.99, bootstrap=boot,
                                            lam_critic=1.0))

    r, v, lp, m, _ = make_rollout(B, T, seed=30 + n, dtype=torch.float64, mask_kind="mixed")
    cases["vapo_f64"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                         _widths(n, T, 5),
                         dict(lam=sae_ext.length_adaptive_lam(m, alpha=0.1),
                              lam_critic=torch.linspace(0.5, 1.0, B, dtype=torch.float64)))

    r, v, _, m, boot = make_rollout(B, T, seed=40 + n, mask_kind="random", reward_kind="dense")
    cases["gae_f32"] = ("gae", dict(rewards=r, values=v, mask=m), _widths(n, T, 6),
                        dict(lam=torch.linspace(0.8, 1.0, B), gamma=0.99, bootstrap=boot,
                             lam_critic=1.0))

    r, v, _, m, _ = make_rollout(B, T, seed=50 + n, dtype=torch.float64, mask_kind="mixed",
                                 reward_kind="dense")
    cases["gae_f64_no_mask"] = ("gae", dict(rewards=r, values=v, mask=None), _widths(n, T, 7),
                                dict(lam=0.9, gamma=0.95))

    # bfloat16 inputs with a float64 bootstrap: the outputs are float64 on every rank.
    r, v, lp, m, boot = make_rollout(B, T, seed=60 + n, dtype=torch.bfloat16, mask_kind="random",
                                     reward_kind="dense")
    cases["bf16_boot64"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                            _widths(n, T, 8), dict(lam=0.6, bootstrap=boot.double()))

    # Long rows with gamma = lambda_inner = 1, where float32 rounding accumulates the most.
    r, v, lp, m, boot = make_rollout(4, 1500, seed=80 + n, mask_kind="random", reward_kind="dense")
    cases["long_f32"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                         _widths(n, 1500, 10), dict(lam=0.95, bootstrap=boot, lam_critic=0.99))

    r, v, lp, m, boot = make_rollout(0, T, seed=70)
    cases["no_rows"] = ("advantages", dict(rewards=r, values=v, logprobs=lp, mask=m),
                        _widths(n, T, 9), dict(lam=0.5, bootstrap=boot))
    return cases


# Cases whose inputs differ between ranks: (rank that is changed, how) -> the error every
# rank must raise. They run between the good cases, so the group must stay in step after them.
ERRORS = {
    "rows_differ": "disagree on B",
    "dtypes_differ": "disagree on values dtype",
    "lam_differs": "different `lam`",
    "bad_mask_on_rank_0": None,  # rank 0: the validator's message; others: rank 0 rejected
    "grad_on_last": None,
    "functions_differ": "disagree on mode",
}


def _error_call(name, k, n):
    r, v, lp, m, boot = make_rollout(4, 6, seed=k)
    kw = dict(lam=0.5, bootstrap=boot)
    if name == "rows_differ" and k == n - 1:
        r, v, lp, m, boot = (x[:3] for x in (r, v, lp, m, boot))
        kw["bootstrap"] = boot
    if name == "dtypes_differ" and k == n - 1:
        v = v.double()
    if name == "lam_differs":
        kw["lam"] = torch.full((4,), 0.5 if k else 0.25)
    if name == "bad_mask_on_rank_0" and k == 0:
        m = m[:, :5]
    if name == "grad_on_last" and k == n - 1:
        v = v.clone().requires_grad_()
    if name == "functions_differ" and k == 0:
        return sd.gae(r, v, m, **kw)
    return sd.advantages(r, v, lp, m, **kw)


def _shard(inputs, t0, t1):
    return {key: (x[:, t0:t1] if x is not None else None) for key, x in inputs.items()}


def _worker(rank, n, init, out):
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=n,
                            timeout=datetime.timedelta(seconds=60))
    got = {}
    cases = list(_cases(n).items())
    order = cases[:2] + [(e, None) for e in ERRORS] + cases[2:]
    for name, case in order:
        try:
            if case is None:
                _error_call(name, rank, n)
                got[name] = "no error"
                continue
            fn, inputs, widths, kw = case
            e = _edges(widths)
            with torch.no_grad():
                got[name] = getattr(sd, fn)(**_shard(inputs, e[rank], e[rank + 1]), **kw)
        except Exception as exc:  # noqa: BLE001  (the parent reports it)
            got[name] = f"{type(exc).__name__}: {exc}"
    dist.destroy_process_group()
    torch.save(got, out)


_RUNS = {}


def _run_group(n):
    """Every rank's results for `_cases(n)`, from n worker processes (run once per n)."""
    if n in _RUNS:
        return _RUNS[n]
    tmp = tempfile.mkdtemp(prefix="sae_dist_")
    init = os.path.join(tmp, "init")
    outs = [os.path.join(tmp, f"rank{k}.pt") for k in range(n)]
    env = subprocess_env(OMP_NUM_THREADS="1")  # the workers import this process's sae_ext
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(k),
                               str(n), init, outs[k]], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp) for k in range(n)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{n} gloo workers did not finish in 180 s (a hang?)")
    for k, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {k} of {n} exited with {p.returncode}:\n{log}"
    _RUNS[n] = [torch.load(o, weights_only=False) for o in outs]
    return _RUNS[n]


def _unsharded(fn, inputs, kw):
    return getattr(sae_ext, fn)(**inputs, **kw)


def _reference(fn, inputs, kw, dtype):
    i = inputs
    if fn == "gae":
        return reference.gae(i["rewards"], i["values"], i["mask"], kw.get("gamma", 1.0),
                             kw["lam"], kw.get("bootstrap"), dtype, kw.get("lam_critic"))
    return reference.advantages(i["rewards"], i["values"], i["logprobs"], i["mask"],
                                kw.get("gamma", 1.0), kw["lam"], kw.get("lam_inner", 1.0),
                                kw.get("threshold", 0.2), kw.get("bootstrap"), dtype,
                                kw.get("lam_critic"))


CASE_NAMES = list(_cases(2))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_each_rank_gets_its_columns_of_the_unsharded_op(n, name):
    results = _run_group(n)
    fn, inputs, widths, kw = _cases(n)[name]
    whole = _unsharded(fn, inputs, kw)
    e = _edges(widths)
    T = inputs["rewards"].shape[1]
    if whole[0].dtype == torch.float32:
        ref64 = _reference(fn, inputs, kw, torch.float64)
        ref32 = _reference(fn, inputs, kw, torch.float32)
    for k in range(n):
        got = results[k][name]
        assert not isinstance(got, str), f"rank {k}: {got}"
        for g, w, what in zip(got, whole, ("advantages", "returns")):
            want = w[:, e[k]:e[k + 1]]
            where = f"{name}, rank {k} of {n} (columns {e[k]}:{e[k + 1]}), {what}"
            assert g.dtype == want.dtype and g.shape == want.shape, where
            if k == n - 1:
                assert torch.equal(g, want), f"{where}: not bit for bit the unsharded op"
            elif g.dtype == torch.float64:
                scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
                err = (g - want).abs().max().item() if want.numel() else 0.0
                assert err <= 1e-12 * scale * math.sqrt(T + 1), f"{where}: error {err:.3g}"
            else:
                i = ("advantages", "returns").index(what)
                assert_close_to_reference(g, ref64[i][:, e[k]:e[k + 1]],
                                          ref32[i][:, e[k]:e[k + 1]], what=where)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name", list(ERRORS))
def test_disagreeing_ranks_all_raise(n, name):
    results = _run_group(n)
    for k in range(n):
        got = results[k][name]
        assert isinstance(got, str) and got.startswith("RuntimeError"), f"rank {k}: {got!r}"
        want = ERRORS[name]
        if name == "bad_mask_on_rank_0":
            want = "`mask` must have the shape" if k == 0 else "rank 0 of the group rejected"
        if name == "grad_on_last":
            want = "gradients do not flow" if k == n - 1 else f"rank {n - 1} of the group rejected"
        assert want in got, f"rank {k} of {n}: {got}"


def test_needs_an_initialized_group():
    r, v, lp, m, _ = make_rollout(2, 4)
    with pytest.raises(RuntimeError, match="not initialized"):
        sd.advantages(r, v, lp, m, lam=0.5)
    with pytest.raises(RuntimeError, match="not initialized"):
        sd.gae(r, v, m)


@pytest.mark.parametrize("fn", ["advantages", "gae"])
def test_signature_mirrors_the_unsharded_function(fn):
    ours = inspect.signature(getattr(sd, fn)).parameters
    theirs = dict(inspect.signature(getattr(sae_ext, fn)).parameters)
    theirs.pop("out", None)  # advantages' preallocated outputs are not offered here
    assert list(ours)[:-1] == list(theirs) and list(ours)[-1] == "group"
    for p in theirs:
        assert (ours[p].kind, ours[p].default) == (theirs[p].kind, theirs[p].default), p


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
